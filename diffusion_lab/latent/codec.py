"""LatentCodec: a frozen first-stage autoencoder and the scale factor of its latents (LDM §3, §4.3.2).

    encode(x) = s · μ_φ(x)       (the posterior mean of q_φ(z | x); the latents are deterministic)
    decode(z) = D_θ(z / s)

The scale s makes the training latents' standard deviation the σ_data every run assumes
(DESIGN §4: 0.5 unless the dataset config says otherwise): s = σ_data / std(μ_φ(x_train)), over
all training latents. Rombach et al. normalise to unit variance, which is the same rule at
σ_data = 1 (`dataset.sigma_data=1.0`); normalising to the run's σ_data keeps every schedule,
preconditioning and weighting that reads `dataset.sigma_data` consistent with the latents.
The scale is a buffer, so a checkpoint carries it with the autoencoder's weights and a latent
model is rebuilt from its own file alone.

Shapes: x (B, C, H, W) in [−1, 1]; z (B, *autoencoder.latent_shape((C, H, W))).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor, nn


class LatentCodec(nn.Module):
    def __init__(self, autoencoder: nn.Module, image_shape: tuple[int, ...]):
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.image_shape = tuple(image_shape)
        self.latent_shape = tuple(autoencoder.latent_shape(self.image_shape))
        # NaN until `fit_scale` (training) or the checkpoint (restoring) sets it
        self.register_buffer("scale", torch.tensor(math.nan))

    def train(self, mode: bool = True):
        """The autoencoder is frozen: it stays in eval mode whatever the module around it does."""
        return super().train(False)

    def fit_scale(self, latents: Tensor, sigma_data: float) -> float:
        """s = σ_data / std(latents), the latents being the unscaled training encodings."""
        std = float(latents.double().std())
        if not (math.isfinite(std) and std > 0):
            raise ValueError(
                f"the autoencoder's training latents have std {std}: it cannot be normalised "
                "(is the autoencoder checkpoint broken?)"
            )
        self.scale.fill_(sigma_data / std)
        return float(self.scale)

    def _check_scale(self) -> None:
        if not math.isfinite(float(self.scale)):
            raise RuntimeError("LatentCodec.scale is not set: fit it on the training latents first")

    @torch.no_grad()
    def unscaled(self, x: Tensor) -> Tensor:
        """μ_φ(x), the posterior mean, before scaling (what the latent cache stores)."""
        return self.autoencoder.encode(x).mode()

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        self._check_scale()
        return self.scale * self.unscaled(x)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        self._check_scale()
        return self.autoencoder.decode(z / self.scale)

    def digest(self) -> str:
        """sha256 of the autoencoder's weights: names the latents it makes (the cache key)."""
        h = hashlib.sha256()
        for name, value in sorted(self.autoencoder.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(value.shape)).encode())
            h.update(
                value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
            )
        return h.hexdigest()[:16]
