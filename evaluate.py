"""Entry point: see diffusion_lab/cli/evaluate.py and `python evaluate.py --help`."""

from diffusion_lab.cli.evaluate import main

if __name__ == "__main__":
    main()
