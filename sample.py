"""Entry point: see diffusion_lab/cli/sample.py and `python sample.py --help`."""

from diffusion_lab.cli.sample import main

if __name__ == "__main__":
    main()
