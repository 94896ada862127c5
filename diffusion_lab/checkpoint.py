"""diffusion_lab checkpoints: written atomically, loaded safely, and the model they hold rebuilt.

Checkpoints are Lightning checkpoints plus `diffusion_lab_config`, the resolved run config as plain
data, so loading uses `torch.load(weights_only=True)` and never unpickles arbitrary objects. The
stored config is untrusted too: `load_checkpoint` refuses it unless every `_target_` in it is one
this project's configs define (diffusion_lab/allowlist.py), before anything is imported or called.
`AtomicCheckpointIO` (trainer.plugins) writes each checkpoint through `io.atomic_torch_save`, so a
kill during a write leaves the previous checkpoint whole.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict

from diffusion_lab.allowlist import ForeignTargetError, check_stored_config
from diffusion_lab.io import atomic_torch_save

CONFIG_KEY = "diffusion_lab_config"
STATISTICS_KEY = "diffusion_lab_statistics"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not written by diffusion_lab."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose saves are atomic (see `atomic_torch_save`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO writes local files and takes no storage_options")
        atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | Path) -> tuple[DictConfig, dict, dict | None]:
    """Read a checkpoint; returns (run config, state_dict, statistics). Raises CheckpointError.

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
    try:
        check_stored_config(ckpt[CONFIG_KEY])
    except ForeignTargetError as err:
        raise CheckpointError(f"refusing the config stored in {path}: {err}") from None
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(
            f"{path} has no state_dict of tensors: it is not a usable checkpoint."
        )
    return OmegaConf.create(ckpt[CONFIG_KEY]), ckpt["state_dict"], ckpt.get(STATISTICS_KEY)


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


def module_from_checkpoint(
    path: str | Path,
    sampler_cfg: DictConfig | None = None,
    paths: DictConfig | None = None,
    sampler_choice: str | None = None,
):
    """Rebuild the run's DiffusionModule (weights and EMA loaded) from a checkpoint.

    `sampler_cfg` replaces the sampler the run was trained with (`sampler=NAME`); a node without
    `_target_` (`+sampler.eta=0.5` alone) changes the stored sampler's knobs instead;
    `sampler_choice` names the new one in errors. `paths` (this invocation's
    `paths` group) replaces the stored machine-local paths, so caches and data are read and written
    where the user running this says, never where the checkpoint's file says. Returns
    (module, parts, config).
    """
    from diffusion_lab.build import build, build_module
    from diffusion_lab.data.statistics import DatasetStatistics

    cfg, state_dict, statistics = load_checkpoint(path)
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights ({len(bad)} tensors with NaN/Inf, e.g. {bad[0]}): "
            "the run diverged before this was written. Use an earlier checkpoint of the run."
        )
    with open_dict(cfg):
        if sampler_cfg is not None and "_target_" not in sampler_cfg:
            cfg.sampler = OmegaConf.merge(cfg.sampler, sampler_cfg)
        elif sampler_cfg is not None:
            cfg.sampler = sampler_cfg
            cfg.choices = {**(cfg.get("choices") or {}), "sampler": sampler_choice or "?"}
        if paths is not None:
            cfg.paths = OmegaConf.to_container(paths, resolve=True)
            if OmegaConf.select(cfg, "dataset.data_dir") is not None:
                cfg.dataset.data_dir = cfg.paths.data_dir
    try:
        stats = DatasetStatistics.from_dict(statistics) if statistics else None
    except TypeError as err:
        raise CheckpointError(f"{path} has malformed dataset statistics ({err}).") from None
    parts = build(cfg, stats)
    module = build_module(cfg, parts)
    try:
        missing, unexpected = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # size mismatch
        first = next(
            (line.strip() for line in str(err).splitlines() if "size mismatch" in line), ""
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit the model its stored config builds ({first[:200]}): "
            "the config and the weights come from different runs."
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model its config builds "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)."
        )
    return module.eval(), parts, cfg
