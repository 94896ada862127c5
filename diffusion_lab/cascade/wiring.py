"""`lowres=superres` wired into a run (build.py calls these): the super-resolution stage's
condition, checked against the data, and its backbone, which takes the condition as channels.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from diffusion_lab.cascade.concat import ConcatCondition
from diffusion_lab.groups import choice, instantiate_group
from diffusion_lab.values import ConfigError


def lowres_condition(cfg: DictConfig, data_shape, restore: bool):
    """`lowres=superres`: a super-resolution stage of a cascade (cascade/lowres.py), checked
    against the data, or None. Its backbone takes x and the condition as channels."""
    if OmegaConf.select(cfg, "lowres") is None:
        return None
    if len(data_shape) != 3:
        raise ConfigError(
            f"{choice(cfg, 'lowres')} super-resolves images; {choice(cfg, 'dataset')} gives data "
            f"of shape {tuple(data_shape)}. Leave lowres unset."
        )
    if cfg.get("conditional", False) or cfg.get("latent") is not None:
        which = "conditional=true (class labels)" if cfg.get("conditional") else "latent=..."
        raise ConfigError(
            f"{choice(cfg, 'lowres')} conditions the network on the low-resolution image; "
            f"combining it with {which} is not supported. Use one or the other."
        )
    lowres = instantiate_group(cfg, "lowres")
    if (lowres.channels, lowres.image_size) != (data_shape[0], data_shape[-1]):
        raise ConfigError(
            f"{choice(cfg, 'lowres')} is set up for {lowres.channels}-channel {lowres.image_size}-"
            f"pixel images; {choice(cfg, 'dataset')} gives shape {tuple(data_shape)}. Leave "
            "lowres.channels and lowres.image_size at their ${dataset...} defaults."
        )
    if not {"in_channels", "out_channels"} <= set(cfg.backbone):
        raise ConfigError(
            f"{choice(cfg, 'lowres')} feeds the condition as extra input channels; "
            f"{choice(cfg, 'backbone')} has no in_channels/out_channels. Use backbone=unet or dit."
        )
    if not restore and OmegaConf.select(cfg, "evaluation.metrics"):
        raise ConfigError(
            f"{choice(cfg, 'lowres')} trains a super-resolution stage, which has no unconditional "
            "samples to score: set evaluation.metrics=[] and score the cascade "
            "(scripts/bench_cascade.py)."
        )
    return lowres


def superres_backbone(cfg: DictConfig, lowres):
    """The backbone of a super-resolution stage: in_channels = 2C + 1 (x, up(z_s), the level
    plane), out_channels = C, wrapped to concatenate the condition (cascade/concat.py)."""
    c = lowres.channels
    return ConcatCondition(
        instantiate_group(cfg, "backbone", in_channels=2 * c + 1, out_channels=c)
    )
