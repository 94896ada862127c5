"""Cold Diffusion snowification (Bansal et al. 2022, §4.4), procedural and non-cumulative:

    x_k = x0 + m_k ⊙ (1 − x0),   m_k ∈ [0, 1]: the snow mask of level k (white = 1.0),

inspired by ImageNet-C's snow. `num_layers` fixed layers of flakes come from a CPU generator
seeded with `seed`: a uniform threshold per pixel u_l(p), a brightness per layer and a wind
direction within 30° of straight down. At level k a pixel holds a flake of layer l when
u_l(p) < density · k/T, so flakes only ever appear as k grows; each flake is smeared into a
`streak`-pixel trail fading linearly (slight motion blur, wrapping at the border), its opacity
grows from ½ to 1 with k/T, and the layers add up, clamped to 1. Level 0 is the identity.
Snow is a restoration task, not a generator: there is no prior; start sampling from a snowed
image instead (`sample.py init_image=PATH start_t=...`).

Shapes: x0 (B, C, H, W) in [−1, 1]; t (B,); m_k (B, 1, H, W).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.degradations.cold import ColdDegradation


class Snow(ColdDegradation):
    needs_statistics = False
    has_prior = False  # restoration only: training grids restore snowed validation images

    def __init__(
        self,
        num_levels: int = 20,
        num_layers: int = 3,
        density: float = 0.08,
        streak: int = 3,
        seed: int = 0,
        noise: float = 0.0,
    ):
        super().__init__(num_levels, noise)
        if num_layers < 1 or streak < 1 or not 0 < density <= 1:
            raise ValueError(
                f"snow needs num_layers >= 1, streak >= 1 and density in (0, 1]; got "
                f"num_layers={num_layers}, streak={streak}, density={density}"
            )
        self.num_layers, self.density, self.streak = int(num_layers), float(density), int(streak)
        self.seed = int(seed)

    def _layers(self, hw) -> tuple[Tensor, Tensor, list[float]]:
        """Thresholds (L, H, W), brightness (L, 1, 1) and wind angles: the same on every machine."""
        g = torch.Generator().manual_seed(self.seed)
        u = torch.rand(self.num_layers, *hw, generator=g)
        shade = 0.6 + 0.4 * torch.rand(self.num_layers, 1, 1, generator=g)
        jitter = torch.rand(self.num_layers, generator=g) - 0.5
        return u, shade, [math.pi / 2 + a * math.pi / 3 for a in jitter.tolist()]

    def mask(self, t: Tensor, hw) -> Tensor:
        """Snow mask m_k (B, 1, H, W) in [0, 1] at the levels of t."""
        u, shade, angles = self._layers(tuple(hw))
        frac = (self.level(t).float() / self.num_levels).view(-1, 1, 1, 1)
        u, shade = u.to(frac.device), shade.to(frac.device)
        flakes = (u < self.density * frac).float() * shade * (0.5 + 0.5 * frac)  # (B, L, H, W)
        mask = torch.zeros(frac.shape[0], 1, *hw, device=frac.device)
        for layer, angle in enumerate(angles):
            for j in range(self.streak):
                shift = (round(j * math.sin(angle)), round(j * math.cos(angle)))
                trail = torch.roll(flakes[:, layer : layer + 1], shift, dims=(2, 3))
                mask = mask + (1 - j / self.streak) * trail
        return mask.clamp(max=1.0)

    def degrade(self, x0: Tensor, t: Tensor) -> Tensor:
        m = self.mask(t.to(x0.device), x0.shape[-2:]).to(x0)
        return x0 + m * (1.0 - x0)

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        raise NotImplementedError(
            "degradation=snow is a restoration task and has no prior to sample from: restore a "
            "snowed image instead with `python sample.py ckpt_path=... init_image=PATH "
            "start_t=<level/T of the snow>`."
        )
