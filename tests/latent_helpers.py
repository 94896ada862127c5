"""A small untrained autoencoder checkpoint, written the way train_ae.py writes one (its config
under CONFIG_KEY with an `autoencoder` node, its weights under `autoencoder.*`), so latent tests
need no autoencoder training."""

from pathlib import Path

import torch

from diffusion_lab.autoencoder.kl import KLAutoencoder
from diffusion_lab.checkpoint import CONFIG_KEY

# 1×16×16 digits -> 4×8×8 latents (f = 2), a few thousand weights
TINY_AE = {
    "_target_": "diffusion_lab.autoencoder.kl.KLAutoencoder",
    "in_channels": 1,
    "z_channels": 4,
    "channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "mid_attention": False,
    "dropout": 0.0,
}


def tiny_autoencoder(seed: int = 0) -> KLAutoencoder:
    torch.manual_seed(seed)
    return KLAutoencoder(**{k: v for k, v in TINY_AE.items() if k != "_target_"}).eval()


def write_autoencoder_ckpt(path: Path, seed: int = 0, image_size: int = 16) -> Path:
    model = tiny_autoencoder(seed)
    config = {
        "autoencoder": TINY_AE,
        "dataset": {
            "_target_": "diffusion_lab.data.digits.DigitsDataModule",
            "channels": 1,
            "image_size": image_size,
        },
    }
    state = {f"autoencoder.{k}": v for k, v in model.state_dict().items()}
    torch.save({CONFIG_KEY: config, "state_dict": state, "global_step": 0}, path)
    return path
