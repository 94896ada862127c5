"""What the entry points share: recording the user's choices, user-facing errors, sampling output."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from diffusion_lab.visualize import save_samples


def record_choices(cfg: DictConfig) -> None:
    """Store `group=option` choices in the config so errors and checkpoints can name them."""
    choices = {
        k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")
    }
    with open_dict(cfg):
        cfg.choices = choices


def fail(err: Exception) -> None:
    """Print an actionable error without a traceback and exit with status 2."""
    print(f"\nerror: {err}", file=sys.stderr)
    sys.exit(2)


def sample_and_save(module, num_samples: int, seed: int, out: Path, sampler=None, x_T=None) -> dict:
    """Generate with the EMA weights (progress bar), save PNG grid + tensor; return timing facts."""
    start = time.perf_counter()
    x, nfe = module.generate(num_samples, seed=seed, sampler=sampler, progress=True, x_T=x_T)
    seconds = time.perf_counter() - start
    grid = save_samples(x, out / "samples.png")
    torch.save(x.cpu(), out / "samples.pt")
    return {
        "num_samples": num_samples,
        "seed": seed,
        "nfe": nfe,
        "seconds": seconds,
        "images_per_s": num_samples / seconds,
        "grid": str(grid),
        "tensor": str(out / "samples.pt"),
    }
