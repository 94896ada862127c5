"""A blur schedule with equal Wasserstein-2 steps, estimated on the data (Daras et al. 2022, §3.3).

Soft Diffusion picks the corruption levels so that consecutive distributions are equally far
apart. With the coupling that shares x0, in the DCT basis (second moments m_i = E[c_i²]):

    W2(σ, σ')² ≤ E‖x_σ − x_σ'‖² = Σ_i m_i (exp(−λ_i σ²/2) − exp(−λ_i σ'²/2))².

We tabulate this distance on a fine geometric grid of σ_B in [σ_min, σ_max], accumulate it into a
monotone "arc length" s(σ) ∈ [0, 1] and set σ_B(t) = s⁻¹(t) by interpolation, so equal steps in t
move the data distribution by equal W2 amounts. σ_B(0) = 0 (clean data).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.schedules.blur import BlurSchedule


class BlurW2(BlurSchedule):
    needs_statistics = True

    def __init__(self, sigma_min: float = 0.5, sigma_max: float = 8.0, resolution: int = 512):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.sigma_min, self.sigma_max, self.resolution = (
            float(sigma_min),
            float(sigma_max),
            int(resolution),
        )
        self._t = self._sigma = None

    def setup(self, degradation, statistics) -> None:
        if statistics is None or statistics.dct_variance is None:
            raise ValueError(
                "schedule=blur_w2 needs dataset statistics of image data (DCT second moments)"
            )
        second_moment = statistics.dct_variance.double().clone()
        dc = degradation.basis(statistics.mean.double().unsqueeze(0).float()).double()[0]
        second_moment += dc**2  # E[c²] = Var[c] + E[c]²
        lam = degradation.basis.frequencies_squared.double()
        sigma = torch.exp(
            torch.linspace(
                math.log(self.sigma_min),
                math.log(self.sigma_max),
                self.resolution,
                dtype=torch.float64,
            )
        )
        alpha = torch.exp(-lam.unsqueeze(0) * sigma.view(-1, 1, 1, 1) ** 2 / 2)  # (R, 1|C, H, W)
        step = ((alpha[1:] - alpha[:-1]) ** 2 * second_moment).flatten(1).sum(1).sqrt()
        arc = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(step, 0)])
        self._t, self._sigma = (arc / arc[-1]).float(), sigma.float()

    def sigma_blur(self, t: Tensor) -> Tensor:
        if self._t is None:
            raise RuntimeError("BlurW2 is estimated from data: the builder calls setup() first")
        grid_t, grid_s = self._t.to(t.device), self._sigma.to(t.device)
        idx = torch.searchsorted(grid_t, t.clamp(0, 1).contiguous()).clamp(1, len(grid_t) - 1)
        t0, t1 = grid_t[idx - 1], grid_t[idx]
        w = ((t - t0) / (t1 - t0).clamp(min=1e-12)).clamp(0, 1)
        log_s = torch.lerp(torch.log(grid_s[idx - 1]), torch.log(grid_s[idx]), w)
        return torch.where(t > 0, torch.exp(log_s), torch.zeros_like(t))
