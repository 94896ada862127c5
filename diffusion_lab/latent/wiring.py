"""`latent=PATH` wired into a run (build.py calls `latent_data`): the image datamodule becomes a
LatentDataModule over the autoencoder in PATH, and the backbone is pointed at the latent shape.
"""

from __future__ import annotations

import math

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from diffusion_lab.autoencoder.load import load_autoencoder
from diffusion_lab.checkpoint import CheckpointError
from diffusion_lab.groups import choice
from diffusion_lab.latent.codec import LatentCodec
from diffusion_lab.latent.data import LatentDataModule
from diffusion_lab.values import ConfigError


def latent_data(cfg: DictConfig, images, restore: bool):
    """`latent=PATH`: the image datamodule becomes a LatentDataModule over the autoencoder in PATH
    (train_ae.py's checkpoint), encoded (or read from the cache) now, with its scale fitted. The
    autoencoder's own config is copied into the run config as `autoencoder`, so the run's
    checkpoints are self-contained: restoring builds the autoencoder from that node (allowlisted
    like every stored `_target_`) and takes its weights and scale from the checkpoint, never
    reading PATH again. Returns (datamodule, codec)."""
    if len(images.data_shape) != 3:
        raise ConfigError(
            f"latent=... encodes images; {choice(cfg, 'dataset')} gives data of shape "
            f"{tuple(images.data_shape)}. Set latent=null."
        )
    if restore:
        if cfg.get("autoencoder") is None:
            raise CheckpointError(
                "the stored config says latent=... but holds no `autoencoder` node: the "
                "checkpoint is incomplete or was edited."
            )
        autoencoder = instantiate(cfg.autoencoder)
    else:
        autoencoder, ae_cfg = load_autoencoder(cfg.latent)
        trained_on = tuple(
            OmegaConf.select(ae_cfg, key) for key in ("dataset.channels", "dataset.image_size")
        )
        shape = tuple(images.data_shape)
        if None not in trained_on and trained_on != (shape[0], shape[-1]):
            raise ConfigError(
                f"latent={cfg.latent} was trained on {trained_on[0]}-channel "
                f"{trained_on[1]}×{trained_on[1]} images; {choice(cfg, 'dataset')} gives "
                f"{shape[0]}-channel {shape[1]}×{shape[2]} ones. Use an autoencoder trained on "
                "this dataset (python train_ae.py dataset=...) or set dataset.image_size."
            )
        with open_dict(cfg):
            cfg.autoencoder = OmegaConf.to_container(ae_cfg.autoencoder, resolve=True)
    try:
        codec = LatentCodec(autoencoder, images.data_shape)
        datamodule = LatentDataModule(
            images, codec, cfg.paths.cache_dir, cfg.get("latent_scale"), fit_scale=not restore
        )
    except ValueError as err:
        raise ConfigError(f"latent={cfg.latent}: {err}") from None
    if not restore:
        datamodule.setup("fit")  # encodes (or reads the cache) and fits the scale
    backbone_sees_latents(cfg, datamodule.data_shape)
    return datamodule, codec


# Backbone keys that take the data's shape from the dataset config (configs/backbone/*.yaml).
SHAPE_INTERPOLATIONS = ("${dataset.channels}", "${dataset.image_size}", "${dataset.dim}")


def backbone_sees_latents(cfg: DictConfig, shape) -> None:
    """Point every backbone value interpolated from the dataset's shape (`${dataset.channels}`,
    nested ones included) at the latents' shape instead: the network denoises latents. Values the
    user set by hand are left alone (the backbone's own checks then name them)."""
    values = dict(zip(SHAPE_INTERPOLATIONS, (shape[0], shape[-1], math.prod(shape))))

    def walk(node, prefix):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list):
                walk(value, f"{prefix}.{key}")
            elif isinstance(value, str) and value in values:
                OmegaConf.update(cfg, f"{prefix}.{key}", values[value], force_add=True)

    walk(OmegaConf.to_container(cfg.backbone, resolve=False), "backbone")
