"""Entry point: see diffusion_lab/cli/export.py and `python export.py --help`."""

from diffusion_lab.cli.export import main

if __name__ == "__main__":
    main()
