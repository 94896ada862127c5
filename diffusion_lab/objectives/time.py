"""Training-time densities p(t): `density(batch, process, device) -> t (batch,)` in [t_min, 1].

uniform     t ~ U[t_min, 1]
stratified  one draw per stratum [i/B, (i+1)/B) of the batch (lower variance; Kingma et al. 2021)
log_normal  log(σ/α) ~ N(P_mean, P_std²), mapped to t by the schedule's inverse (Karras et al. 2022)

`needs_logsnr` declares that a density maps through the schedule's log-SNR inverse (build.py
checks it against `schedule.has_logsnr`).
"""

import math

import torch
from torch import Tensor


class UniformTime:
    needs_logsnr = False

    def __init__(self, t_min: float = 1e-4):
        if not 0 <= t_min < 1:
            raise ValueError(f"objective.time.t_min must lie in [0, 1), got {t_min}")
        self.t_min = float(t_min)

    def _to_range(self, u: Tensor) -> Tensor:
        return self.t_min + (1 - self.t_min) * u

    def __call__(self, batch: int, process, device) -> Tensor:
        return self._to_range(torch.rand(batch, device=device))


class Stratified(UniformTime):
    def __call__(self, batch: int, process, device) -> Tensor:
        strata = torch.randperm(batch, device=device)
        return self._to_range((strata + torch.rand(batch, device=device)) / batch)


class LogNormal(UniformTime):
    needs_logsnr = True

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, t_min: float = 1e-4):
        super().__init__(t_min)
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def __call__(self, batch: int, process, device) -> Tensor:
        log_ratio = self.p_mean + self.p_std * torch.randn(batch, device=device)  # log(σ/α)
        t = process.t_from_logsnr(-2 * log_ratio)
        return t.nan_to_num(1.0).clamp(self.t_min, 1.0)

    def density_at(self, logsnr: Tensor) -> Tensor:
        """p(λ) of this density, for tests and plots."""
        x = -logsnr / 2
        return torch.exp(-0.5 * ((x - self.p_mean) / self.p_std) ** 2) / (
            2 * self.p_std * math.sqrt(2 * math.pi)
        )
