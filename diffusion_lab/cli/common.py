"""What the entry points share: recording the user's choices, user-facing errors, sampling output."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from diffusion_lab.visualize import save_samples


def record_choices(cfg: DictConfig) -> None:
    """Store `group=option` choices in the config so errors and checkpoints can name them."""
    choices = {
        k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")
    }
    with open_dict(cfg):
        cfg.choices = choices


def pin_job_for_ddp_workers() -> None:
    """Make Lightning's DDP launcher re-run exactly this job, in this job's directory.

    With `strategy=ddp` Lightning starts ranks > 0 by re-running the script with `sys.argv` plus
    `hydra.run.dir=<HydraConfig.run.dir>`. Under `-m` (or a sweeper config) sys.argv is the whole
    sweep, so every worker would launch the sweep again and write new run directories. Here the
    workers get this job's own overrides in single-run mode, and run.dir is pinned to the resolved
    output directory (also what keeps a `${now:...}` run directory the same in every process)."""
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]


@contextmanager
def one_ddp_job():
    """Leave no DDP state behind for the next job of a multirun in this process.

    Lightning's DDP launcher writes MASTER_PORT, LOCAL_RANK, WORLD_SIZE... into os.environ and
    initialises a process group here; left in place, the next job would think its processes were
    started externally and wait on a group whose workers have exited."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


def fail(err: Exception) -> None:
    """Print an actionable error without a traceback and exit with status 2."""
    print(f"\nerror: {err}", file=sys.stderr)
    sys.exit(2)


def sample_and_save(
    module, num_samples: int, seed: int, out: Path, sampler=None, x_T=None, **generate_kwargs
) -> dict:
    """Generate with the EMA weights (progress bar), save PNG grid + tensor; return timing facts.
    `generate_kwargs` (cond, guidance, guidance_rescale) go to `module.generate`."""
    start = time.perf_counter()
    x, nfe = module.generate(
        num_samples, seed=seed, sampler=sampler, progress=True, x_T=x_T, **generate_kwargs
    )
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
