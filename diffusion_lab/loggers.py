"""Loggers that need more than their class: `wandb_logger` (`logger=wandb`) never prompts for a login.

W&B's mode is decided before `wandb.init`, in this order:

1. `WANDB_MODE` in the environment (online, offline, disabled) is respected as it is;
2. `offline=true` in the config gives an offline run;
3. otherwise the run goes online when wandb finds an API key on its own (`WANDB_API_KEY`, the
   netrc entry `wandb login` writes, or wandb's settings files), and offline when it finds none.

An offline run is a local directory under `<save_dir>/wandb/offline-run-*` that
`wandb sync <dir>` uploads later; the logger prints that command. wandb only prompts for a key
when it goes online without one, and that case either falls back to offline (3.) or, with an
explicit `WANDB_MODE=online`, stops with a message, so no run ever waits at a login prompt.

`log_image` sends a PNG to the loggers that take images (W&B, TensorBoard); the others skip it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

_MODES = {"dryrun": "offline", "run": "online"}  # wandb's older spellings


def wandb_api_key_found() -> bool:
    """Whether wandb finds credentials without asking: env, netrc or its settings files.

    `wandb.login(prompt=False, verify=False)` (public API): with no credentials it returns False
    at once, changes nothing and contacts no server; with some it sets up the session that the
    following `wandb.init` would set up anyway.
    """
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


def sync_hint(save_dir: str | os.PathLike) -> str:
    """The command that uploads the offline run(s) written under `save_dir`."""
    return f"wandb sync {Path(save_dir) / 'wandb'}/offline-run-*"


def wandb_mode(offline: bool | None, save_dir: str | os.PathLike) -> str:
    """online / offline / disabled, as the module docstring says; prints a line when offline."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        mode = _MODES.get(env, env)
        if mode == "online" and not wandb_api_key_found():
            raise ValueError(
                "WANDB_MODE=online but no W&B login found: run `wandb login` or set "
                "WANDB_API_KEY, or use WANDB_MODE=offline and upload later with `wandb sync`"
            )
        reason = f"WANDB_MODE={env}"
    elif offline:
        mode, reason = "offline", "logger.wandb.offline=true"
    elif wandb_api_key_found():
        return "online"
    else:
        mode, reason = "offline", None
    if mode == "offline":
        where = f"writing an offline run under {save_dir}"
        upload = f"upload it later with `{sync_hint(save_dir)}`"
        if reason is None:
            print(
                f"W&B: no W&B login found, {where}; {upload} "
                "(or `wandb login` first to log online)",
                flush=True,
            )
        else:
            print(f"W&B: {reason}, {where}; {upload}", flush=True)
    return mode


def wandb_logger(
    project: str,
    name: str | None,
    group: str | None,
    tags: list[str | None] | None,
    save_dir: str,
    offline: bool | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A `WandbLogger` whose mode is decided without a login prompt (see the module docstring).

    `tags`: empty entries are dropped (a group that was not chosen). Inside a Hydra multirun,
    whose jobs share one process, the previous job's run is finished first, `group=None` means the
    sweep directory's name and the job number is appended to `name`, mirroring the output
    directories. `kwargs` go to `WandbLogger` and on to `wandb.init` (`log_model`, `entity`,
    `job_type`, `notes`, ...).
    """
    import wandb

    mode = wandb_mode(offline, save_dir)
    if wandb.run is not None:  # the previous job of a multirun (same process): close its run
        wandb.finish()
    sweep = _sweep()
    if sweep is not None:  # mirror the output directories: <sweep dir>/<job number>
        group = sweep[0] if group is None else group
        name = f"{name}-{sweep[1]}" if name else None
    Path(save_dir).mkdir(parents=True, exist_ok=True)  # wandb falls back to /tmp without it
    logger = WandbLogger(
        project=project,
        name=name,
        group=group,
        tags=[str(t) for t in tags or [] if t not in (None, "")],
        save_dir=str(save_dir),
        mode=mode,
        **kwargs,
    )
    # WandbLogger always passes anonymous=None, which wandb 0.31 only warns about (deprecated)
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def _sweep() -> tuple[str, int] | None:
    """(sweep directory name, job number) under `python train.py -m ...`; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.sweep.dir).name, hydra_cfg.job.num


def log_image(loggers, key: str, path: str | os.PathLike, step: int | None = None) -> None:
    """Log a PNG to every logger that takes images (W&B, TensorBoard); the others skip it."""
    from pytorch_lightning.loggers import TensorBoardLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(lg, TensorBoardLogger):
            from torchvision.io import ImageReadMode, read_image

            image = read_image(str(path), mode=ImageReadMode.RGB)  # (3, H, W) uint8
            lg.experiment.add_image(key, image, global_step=step, dataformats="CHW")
