"""Entry point: see diffusion_lab/cli/distill.py and `python distill.py --help`."""

from diffusion_lab.cli.distill import main

if __name__ == "__main__":
    main()
