"""Command-line entry points (Hydra): train, sample, evaluate."""

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
