"""Linear β schedule (Ho et al. 2020, DDPM), in continuous time (Song et al. 2021, eq. 33).

    β(t) = β_min + t (β_max − β_min),   ᾱ(t) = α(t)² = exp(−β_min t − ½ (β_max − β_min) t²)
    λ(t) = log(ᾱ / (1 − ᾱ)) = −log(expm1(β_min t + ½ (β_max − β_min) t²))

β_min = 0.1, β_max = 20 is DDPM's β_1 = 1e-4, β_T = 0.02 times T = 1000: the T-step DDPM is
this schedule on the grid t_i = i/T.
"""

import torch
from torch import Tensor

from diffusion_lab.schedules.base import LogSNRSchedule


class LinearBeta(LogSNRSchedule):
    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        super().__init__()
        if not 0 < beta_min < beta_max:
            raise ValueError(f"schedule needs 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _neg_log_alpha_bar(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def logsnr(self, t: Tensor) -> Tensor:
        return -torch.log(torch.expm1(self._neg_log_alpha_bar(t)))

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        u = torch.nn.functional.softplus(-logsnr)  # −log ᾱ
        d = self.beta_max - self.beta_min
        return (torch.sqrt(self.beta_min**2 + 2 * d * u) - self.beta_min) / d
