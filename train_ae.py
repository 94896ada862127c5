"""Entry point: see diffusion_lab/cli/train_ae.py and `python train_ae.py --help`."""

from diffusion_lab.cli.train_ae import main

if __name__ == "__main__":
    main()
