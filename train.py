"""Entry point: see diffusion_lab/cli/train.py and `python train.py --help`."""

from diffusion_lab.cli.train import main

if __name__ == "__main__":
    main()
