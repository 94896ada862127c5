"""diffusion_lab checkpoints: written atomically, loaded safely, and the model they hold rebuilt.

Checkpoints are Lightning checkpoints plus `diffusion_lab_config`, the resolved run config as plain
data, so loading uses `torch.load(weights_only=True)` and never unpickles arbitrary objects. The
stored config is untrusted too: `load_checkpoint` refuses it unless every `_target_` in it is one
this project's configs define (diffusion_lab/allowlist.py), before anything is imported or called.
`AtomicCheckpointIO` (trainer.plugins) writes each checkpoint through `io.atomic_torch_save`, so a
kill during a write leaves the previous checkpoint whole.

Fitted state (bases, priors, tabulated schedules) is saved as buffers in the state_dict; no raw
data travels with a checkpoint. A model is rebuilt with those buffers empty and
`adopt_fitted_shapes` sizes them from the checkpoint before `load_state_dict` fills them
(build.module_from_checkpoint). Checkpoints written before this (with `diffusion_lab_statistics`,
a dataset subset) still load: their statistics rebuild the fitted state as they used to.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn

from diffusion_lab.allowlist import ForeignTargetError, check_stored_config, rename_targets
from diffusion_lab.io import atomic_torch_save

CONFIG_KEY = "diffusion_lab_config"
LEGACY_STATISTICS_KEY = "diffusion_lab_statistics"  # older checkpoints: a dataset subset


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not written by diffusion_lab."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose saves are atomic (see `atomic_torch_save`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO writes local files and takes no storage_options")
        atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | Path) -> tuple[DictConfig, dict, dict | None]:
    """Read a checkpoint; returns (run config, state_dict, legacy statistics or None). Raises
    CheckpointError.

    The stored config is checked against the target allowlist before it is returned, so no caller
    can instantiate a foreign `_target_` from it."""
    if path is None or str(path) in ("", "???"):
        raise CheckpointError(
            "no checkpoint given: pass ckpt_path=outputs/train/<run>/checkpoints/last.ckpt"
        )
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"ckpt_path={path} is a directory, not a checkpoint file: pass the file, e.g. "
            f"{path / 'checkpoints' / 'last.ckpt'}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Train first (`python train.py`); runs leave "
            "outputs/train/<run>/checkpoints/last.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, wrong format, pickled objects
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise CheckpointError(
            f"could not read checkpoint {path} ({reason}). The file is truncated, corrupt or not "
            "a PyTorch checkpoint: use another one, e.g. the run's last.ckpt."
        ) from None
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a diffusion_lab checkpoint (no '{CONFIG_KEY}' / 'state_dict' entries)."
        )
    ckpt[CONFIG_KEY] = rename_targets(ckpt[CONFIG_KEY])  # older names -> today's (allowlist.py)
    try:
        check_stored_config(ckpt[CONFIG_KEY])
    except ForeignTargetError as err:
        raise CheckpointError(f"refusing the config stored in {path}: {err}") from None
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(
            f"{path} has no state_dict of tensors: it is not a usable checkpoint."
        )
    return OmegaConf.create(ckpt[CONFIG_KEY]), ckpt["state_dict"], ckpt.get(LEGACY_STATISTICS_KEY)


def nonfinite_tensors(tensors: dict) -> list[str]:
    """Names of the floating-point tensors in `tensors` that hold NaN or Inf (one device sync per
    device when all are finite, so it is cheap enough to run after every training step)."""
    by_device: dict = {}
    for name, value in tensors.items():
        if torch.is_tensor(value) and value.is_floating_point():
            by_device.setdefault(value.device, []).append((name, value))
    bad = []
    for group in by_device.values():
        finite = torch.stack([torch.isfinite(v).all() for _, v in group])
        if not bool(finite.all()):
            bad += [name for (name, _), ok in zip(group, finite.tolist()) if not ok]
    return bad


def adopt_fitted_shapes(module: nn.Module, state_dict: dict) -> list[str]:
    """Give every empty buffer of `module` (None or 0 elements: fitted state not built yet) the
    shape and dtype of its entry in `state_dict`, so `load_state_dict` can fill it. Buffers that
    already have a size, and all parameters, are left as they are (a real mismatch still fails).
    Returns the names of the buffers it sized."""
    sized = []
    for prefix, sub in module.named_modules():
        for name, buf in list(sub._buffers.items()):
            key = f"{prefix}.{name}" if prefix else name
            saved = state_dict.get(key)
            if torch.is_tensor(saved) and (buf is None or buf.numel() == 0) and saved.numel() > 0:
                device = buf.device if buf is not None else None
                sub._buffers[name] = torch.empty_like(saved, device=device)
                sized.append(key)
    return sized
