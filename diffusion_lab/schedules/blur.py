"""Blur schedules σ_B(t) for heat dissipation (Rissanen et al. 2023, §3.3) and Soft Diffusion.

    geometric:  σ_B(t) = σ_B,min^{1−t} σ_B,max^{t}  for t > 0,   σ_B(0) = 0 (clean data)

The blur degradation turns σ_B into α_i(t) = exp(−λ_i σ_B(t)²/2) per DCT frequency. Shapes: (B,) → (B,).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.schedules.base import Schedule


class BlurSchedule(Schedule):
    """The interface: σ_B(t), the std of the Gaussian blur kernel (pixels) at time t."""

    def sigma_blur(self, t: Tensor) -> Tensor:
        raise NotImplementedError


class GeometricBlur(BlurSchedule):
    def __init__(self, sigma_min: float = 0.5, sigma_max: float = 8.0):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sigma_blur(self, t: Tensor) -> Tensor:
        log_s = math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)
        return torch.where(t > 0, torch.exp(log_s), torch.zeros_like(t))
