"""Config groups as the user chose them, for errors that name the choice.

choice(cfg, "sampler")            -> "sampler=heun" (the CLI's record), else the class name
instantiate_group(cfg, "sampler") -> hydra's instantiate, with a constructor's ValueError or
                                     TypeError raised as a ConfigError naming the choice
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.values import ConfigError


def choice(cfg: DictConfig, group: str) -> str:
    """`group=option` as the user chose it (recorded by the CLI), else the class name."""
    chosen = OmegaConf.select(cfg, f"choices.{group}")
    if chosen is not None:
        return f"{group}={chosen}"
    target = OmegaConf.select(cfg, f"{group}._target_") or "?"
    return f"{group}={target.rsplit('.', 1)[-1]}"


def instantiate_group(cfg: DictConfig, group: str, **overrides):
    """instantiate(cfg[group], **overrides), with a constructor's ValueError as a ConfigError
    naming the choice."""
    try:
        return instantiate(cfg[group], **overrides)
    except InstantiationException as err:
        cause = err.__cause__ if isinstance(err.__cause__, ValueError | TypeError) else None
        if cause is None:
            raise
        raise ConfigError(f"{choice(cfg, group)}: {cause}") from None
