"""Linear β schedule (Ho et al. 2020, DDPM), in continuous time (Song et al. 2021, eq. 33).

    β(t) = β_min + t (β_max − β_min),   ᾱ(t) = α(t)² = exp(−β_min t − ½ (β_max − β_min) t²)
    λ(t) = log(ᾱ / (1 − ᾱ)) = −log(expm1(β_min t + ½ (β_max − β_min) t²))

β_min = 0.1, β_max = 20 is DDPM's β_1 = 1e-4, β_T = 0.02 times T = 1000, and this schedule is the
T-step DDPM's continuous limit (T → ∞), not the T-step DDPM itself: on the grid t_i = i/T its ᾱ
differs from Π_{j≤i}(1 − β_j) by up to ~7%: at t = 1, ∫β dt = Σ β_j = 10.05 exactly, but
−log(1 − β_j) = β_j + β_j²/2 + ..., so ᾱ(1) = exp(−10.05) = 4.32e-5 against 4.04e-5. The exact T-step
DDPM is schedule=ddpm_discrete (DiscreteLinearBeta, schedules/discrete.py).
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
