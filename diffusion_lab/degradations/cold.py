"""The surface every Cold Diffusion operator shares (Bansal et al. 2022, §3): blur, pixelate, snow.

A deterministic operator degrade(x0, t) on T discrete levels: t maps to the level k = ceil(t·T)
clamped to [0, T], so the `uniform` grid with T steps visits t_i = i/T; α = 1 and σ = `noise`
(x_t = degrade(x0, t) + σ z); the backbone is conditioned on t itself. No schedule is read.

Shapes: x0 (B, C, H, W) in [−1, 1]; t (B,); α, σ (B, 1, 1, 1).
"""

import torch
from torch import Tensor

from diffusion_lab.degradations.base import Degradation

LEVEL_TOLERANCE = 1e-3  # in level units: t = i/T rounded to float32 still maps to level i


class ColdDegradation(Degradation):
    """Deterministic operator degrade(x0, t) on T discrete levels, plus small noise σ."""

    linear = False
    full_rank_noise = False
    isotropic = False
    schedule_type = None

    def __init__(self, num_levels: int, noise: float = 0.0):
        super().__init__()
        if num_levels < 1 or noise < 0:
            raise ValueError(
                f"degradation.num_levels must be >= 1 and degradation.noise >= 0, "
                f"got num_levels={num_levels}, noise={noise}"
            )
        self.num_levels, self.noise = int(num_levels), float(noise)

    def level(self, t: Tensor) -> Tensor:
        """Level k = ceil(t·T) clamped to [0, T], as int64 (B,)."""
        k = torch.ceil(t.double() * self.num_levels - LEVEL_TOLERANCE)
        return k.clamp(0, self.num_levels).long()

    def alpha_sigma(self, schedule, t: Tensor, data_shape) -> tuple[Tensor, Tensor]:
        alpha = torch.ones(t.shape[0], *([1] * len(data_shape)), device=t.device)
        return alpha, torch.full_like(alpha, self.noise)

    def noise_cond(self, schedule, t: Tensor) -> Tensor:
        return t.float()

    @staticmethod
    def _randn(shape, device, generator) -> Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_device).to(device)
