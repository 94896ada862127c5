"""Masking (in-painting) as a corruption: a Gaussian-edged hole that grows from the centre.

Soft Diffusion's masking corruption (Daras et al. 2022, §5) written in the pixel basis:

    α_ij(t) = Φ((d_ij − r(t)) / w),   r(t) = −3w + t (R + 6w),   σ(t) = σ_min (σ_max/σ_min)^t,

with d_ij the distance of pixel (i, j) from `center` (default: the image centre), R the largest such
distance, Φ the standard normal CDF and w the width of the fade. α = 1 (clean) at t = 0 and
α ≤ Φ(−3) ≈ 0.001 everywhere at t = 1, so the prior is N(0, σ(1)² I).
Shapes: α (B, 1, H, W); σ (B, 1, 1, 1).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.degradations.base import Degradation, gaussian_prior_log_prob
from diffusion_lab.degradations.blur import ALPHA_MIN


class Mask(Degradation):
    full_rank_noise = True

    def __init__(
        self, fade: float = 1.0, noise_min: float = 0.01, noise_max: float = 1.0, center=None
    ):
        super().__init__()
        if fade <= 0 or not 0 < noise_min <= noise_max:
            raise ValueError("degradation=mask needs fade > 0 and 0 < noise_min <= noise_max")
        self.fade, self.noise_min, self.noise_max = float(fade), float(noise_min), float(noise_max)
        self.center = None if center is None else tuple(float(c) for c in center)
        self.register_buffer("distance", torch.zeros(0))

    def setup(self, data_shape, statistics=None) -> None:
        if len(data_shape) != 3:
            raise ValueError(f"degradation=mask works on images (C, H, W), got {tuple(data_shape)}")
        _, h, w = data_shape
        cy, cx = self.center if self.center is not None else ((h - 1) / 2, (w - 1) / 2)
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32),
            torch.arange(w, dtype=torch.float32),
            indexing="ij",
        )
        self.distance = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)[None]

    def alpha_sigma(self, schedule, t: Tensor, data_shape):
        t = t.float().view(-1, 1, 1, 1)
        radius = -3 * self.fade + t * (self.distance.max() + 6 * self.fade)
        alpha = 0.5 * (1 + torch.erf((self.distance - radius) / (self.fade * math.sqrt(2))))
        alpha = torch.where(t > 0, alpha.clamp(min=ALPHA_MIN), torch.ones_like(alpha))
        sigma = self.noise_min * (self.noise_max / self.noise_min) ** t
        return alpha, torch.where(t > 0, sigma, torch.zeros_like(sigma))

    def noise_cond(self, schedule, t: Tensor) -> Tensor:
        return t.float()

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        return self.noise_max * torch.randn(shape, generator=generator).to(device)

    def prior_log_prob(self, schedule, x1: Tensor) -> Tensor:
        return gaussian_prior_log_prob(self, schedule, x1)
