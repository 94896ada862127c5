"""diffusion_lab checkpoints: written atomically, loaded safely, and the model they hold rebuilt.

Checkpoints are Lightning checkpoints plus `diffusion_lab_config`, the resolved run config as plain
data, so loading uses `torch.load(weights_only=True)` and never unpickles arbitrary objects.
`AtomicCheckpointIO` (trainer.plugins) writes each checkpoint to a temporary file beside its target,
fsyncs it and renames it into place, so a kill during a write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "diffusion_lab_config"
STATISTICS_KEY = "diffusion_lab_statistics"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not written by diffusion_lab."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename it over `path`.

    os.replace within one filesystem is atomic: readers see the old file or the new one, never a
    part. (Lightning's own save goes through an fsspec transaction whose temporary file lives in
    /tmp, and moving it across filesystems is a copy that a kill can cut short.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose saves are atomic (see `atomic_torch_save`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO writes local files and takes no storage_options")
        atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | Path) -> tuple[DictConfig, dict, dict | None]:
    """Read a checkpoint; returns (run config, state_dict, statistics). Raises CheckpointError."""
    if path is None or str(path) in ("", "???"):
        raise CheckpointError(
            "no checkpoint given: pass ckpt_path=outputs/train/<run>/checkpoints/last.ckpt"
        )
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Train first (`python train.py`); runs leave "
            "outputs/train/<run>/checkpoints/last.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled objects
        raise CheckpointError(
            f"could not read checkpoint {path} ({type(err).__name__}: {str(err)[:200]}). The file is "
            "truncated, corrupt or not a PyTorch checkpoint: use another one, e.g. the run's last.ckpt."
        ) from None
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a diffusion_lab checkpoint (no '{CONFIG_KEY}' / 'state_dict' entries)."
        )
    return OmegaConf.create(ckpt[CONFIG_KEY]), ckpt["state_dict"], ckpt.get(STATISTICS_KEY)


def module_from_checkpoint(path: str | Path, sampler_cfg: DictConfig | None = None):
    """Rebuild the run's DiffusionModule (weights and EMA loaded) from a checkpoint.

    `sampler_cfg` replaces the sampler the run was trained with. Returns (module, parts, config).
    """
    from diffusion_lab.build import build, build_module
    from diffusion_lab.data.statistics import DatasetStatistics

    cfg, state_dict, statistics = load_checkpoint(path)
    if sampler_cfg is not None:
        cfg.sampler = sampler_cfg
    parts = build(cfg, DatasetStatistics.from_dict(statistics) if statistics else None)
    module = build_module(cfg, parts)
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model its config builds "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)."
        )
    return module.eval(), parts, cfg
