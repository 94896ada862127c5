"""Network backbones: `backbone(x, noise_cond (B,), cond=None) -> x-shaped tensor`.

They know nothing about diffusion; preconditioning lives in `diffusion_lab.denoiser`.
"""

from diffusion_lab.backbones.dit import DiT
from diffusion_lab.backbones.embedding import FourierFeatures, NoiseEmbedding
from diffusion_lab.backbones.mlp import MLP
from diffusion_lab.backbones.unet import UNet

__all__ = ["MLP", "DiT", "FourierFeatures", "NoiseEmbedding", "UNet"]
