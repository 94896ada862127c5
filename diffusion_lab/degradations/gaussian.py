"""Gaussian noise in the pixel basis (isotropic): x_t = α(t) x0 + σ(t) z.

Given a log-SNR schedule λ(t) = log(α²/σ²) (Kingma et al. 2021):
  variance preserving (DDPM, Ho et al. 2020):  α² = sigmoid(λ),  σ² = sigmoid(−λ),  α² + σ² = 1;
  variance exploding (EDM, Karras et al. 2022): α = 1,  σ = exp(−λ/2).
Both see the same noise-to-signal ratio σ/α at a given t, so any schedule works with either.

Shapes: t (B,) → α, σ (B, 1, ..., 1) broadcasting against x (B, *data_shape).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion_lab.degradations.base import Degradation, gaussian_prior_log_prob
from diffusion_lab.schedules.base import LogSNRSchedule

LOGSNR_CLAMP = 40.0  # keeps the noise embedding finite at t = 0 (λ = +∞)


class _Gaussian(Degradation):
    isotropic = True
    full_rank_noise = True
    schedule_type = LogSNRSchedule

    def _alpha_sigma(self, logsnr: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def alpha_sigma(self, schedule, t: Tensor, data_shape) -> tuple[Tensor, Tensor]:
        t = t.to(torch.promote_types(t.dtype, torch.float32))  # float32, or float64 if double
        logsnr = schedule.logsnr(t).reshape(-1, *([1] * len(data_shape)))
        return self._alpha_sigma(logsnr)

    def noise_cond(self, schedule, t: Tensor) -> Tensor:
        """¼ log(σ/α) = −λ/8: EDM's c_noise = ¼ log σ for VE, the same ratio for VP."""
        return -schedule.logsnr(t.float()).clamp(-LOGSNR_CLAMP, LOGSNR_CLAMP) / 8

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        t1 = torch.ones(shape[0], device=device)
        _, sigma = self.alpha_sigma(schedule, t1, shape[1:])
        return sigma * torch.randn(shape, device=device, generator=generator)

    def prior_log_prob(self, schedule, x1: Tensor) -> Tensor:
        return gaussian_prior_log_prob(self, schedule, x1)


class VariancePreserving(_Gaussian):
    """α² = sigmoid(λ), σ² = sigmoid(−λ)."""

    def _alpha_sigma(self, logsnr):
        # in log space: sigmoid(−λ).sqrt() underflows to σ = 0 in float32 once λ > ~87
        return torch.exp(0.5 * F.logsigmoid(logsnr)), torch.exp(0.5 * F.logsigmoid(-logsnr))


class VarianceExploding(_Gaussian):
    """α = 1, σ = exp(−λ/2)."""

    def _alpha_sigma(self, logsnr):
        return torch.ones_like(logsnr), torch.exp(-logsnr / 2)
