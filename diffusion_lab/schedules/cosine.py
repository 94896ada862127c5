"""Cosine schedule (Nichol & Dhariwal 2021, eq. 17), truncated in log-SNR.

    ᾱ(t) = cos²(φ(t)),   λ(t) = −2 log tan φ(t),   φ(t) = φ_min + t (φ_max − φ_min),
    φ_min = arctan(exp(−λ_max/2)),   φ_max = arctan(exp(−λ_min/2)).

Pinned normalisation: ᾱ is cos² itself (no division by f(0)). Nichol & Dhariwal's offset s = 0.008
is λ_max ≈ 8.77 and their λ_min = −∞; we default to λ_max = +∞ (clean data at t = 0) and truncate
at λ_min = −10 so the prior and the noise embedding stay finite (as in Kingma & Gao 2023).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.schedules.base import LogSNRSchedule


class Cosine(LogSNRSchedule):
    def __init__(self, logsnr_min: float = -10.0, logsnr_max: float | None = None):
        super().__init__()
        logsnr_max = math.inf if logsnr_max is None else float(logsnr_max)
        if not logsnr_min < logsnr_max:
            raise ValueError(
                f"schedule needs logsnr_min < logsnr_max, got {logsnr_min}, {logsnr_max}"
            )
        self.logsnr_min, self.logsnr_max = float(logsnr_min), logsnr_max
        self._phi_min = math.atan(math.exp(-logsnr_max / 2))
        self._phi_max = math.atan(math.exp(-logsnr_min / 2))

    def logsnr(self, t: Tensor) -> Tensor:
        phi = self._phi_min + t * (self._phi_max - self._phi_min)
        return -2 * torch.log(torch.tan(phi))

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        phi = torch.atan(torch.exp(-logsnr / 2))
        return (phi - self._phi_min) / (self._phi_max - self._phi_min)
