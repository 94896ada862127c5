"""Latent diffusion (Rombach et al. 2022): any corruption, run on the latents of a trained
autoencoder (diffusion_lab/autoencoder/, `python train_ae.py`).

    LatentCodec        z = s · E(x), x = D(z / s): the frozen autoencoder and its scale factor s
    LatentDataModule   a dataset's splits encoded once (cached) into scaled latents
"""

from diffusion_lab.latent.codec import LatentCodec
from diffusion_lab.latent.data import LatentDataModule

__all__ = ["LatentCodec", "LatentDataModule"]
