"""EDM / Karras et al. (2022) noise levels as a continuous schedule.

    σ(t) = (σ_min^{1/ρ} + t (σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ,   λ(t) = −2 log σ(t)

This is eq. (5) of the paper with the step index i/(N−1) replaced by 1 − t. With σ_min = 0 (the
default) t = 0 is clean data, and EDM's N-step discretisation (σ_min = 0.002) is the `karras` grid.
With a VE degradation σ is the noise std; with VP it is the noise-to-signal ratio σ/α.
"""

import torch
from torch import Tensor

from diffusion_lab.schedules.base import LogSNRSchedule


class EDMSchedule(LogSNRSchedule):
    def __init__(self, sigma_max: float = 80.0, rho: float = 7.0, sigma_min: float = 0.0):
        super().__init__()
        if not 0 <= sigma_min < sigma_max or rho <= 0:
            raise ValueError(
                f"schedule needs 0 <= sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}"
            )
        self.sigma_max, self.rho, self.sigma_min = float(sigma_max), float(rho), float(sigma_min)
        self._lo, self._hi = self.sigma_min ** (1 / rho), self.sigma_max ** (1 / rho)

    def sigma(self, t: Tensor) -> Tensor:
        return (self._lo + t * (self._hi - self._lo)) ** self.rho

    def logsnr(self, t: Tensor) -> Tensor:
        return -2 * torch.log(self.sigma(t))

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        sigma = torch.exp(-logsnr / 2)
        return (sigma ** (1 / self.rho) - self._lo) / (self._hi - self._lo)
