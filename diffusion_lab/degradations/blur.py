"""Blur as diffusion in the DCT basis: heat dissipation and Soft Diffusion's blur + noise.

Heat dissipation (Rissanen et al. 2023, eq. 4-5): the heat equation with Neumann boundaries is
diagonal in the DCT-II basis, so blurring by a Gaussian of std σ_B damps frequency (i, j) by

    α_ij(t) = exp(−λ_ij σ_B(t)² / 2),   λ_ij = (π i / H)² + (π j / W)²,

plus a small noise floor σ (Rissanen et al. use 0.01). Soft Diffusion (Daras et al. 2022, §3) keeps
the same α and lets the noise grow: σ(t) = σ_min (σ_max/σ_min)^t. At t = 0 both are clean data.

The DC component (λ = 0) is never damped: at t = 1 only the per-channel mean survives, so the
prior draws the DCT coefficients of x0 — DC from a full-covariance GMM fitted to the training
images' channel means, the rest from N(0, their data variance) — and corrupts them to t = 1.
Shapes: α (B, 1, H, W) or (B, C, H, W); σ (B, 1, 1, 1).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.bases import DCT
from diffusion_lab.degradations.base import Degradation, normal_log_prob
from diffusion_lab.priors import GaussianMixturePrior
from diffusion_lab.schedules.blur import BlurSchedule

ALPHA_MIN = 1e-6  # keeps σ/α and α_s/α_t finite in float32; far below the noise floor


class Blur(Degradation):
    full_rank_noise = True
    schedule_type = BlurSchedule
    needs_statistics = True

    def __init__(self, noise: float = 0.01, prior_components: int = 1):
        super().__init__()
        if noise <= 0:
            raise ValueError(
                f"degradation.noise must be > 0 (the heat-dissipation noise floor), got {noise}"
            )
        self.noise, self.prior_components = float(noise), int(prior_components)
        self.basis = DCT()
        self.dc_prior = GaussianMixturePrior()
        self.register_buffer("coef_std", torch.zeros(0))

    def setup(self, data_shape, statistics) -> None:
        if len(data_shape) != 3:
            raise ValueError(
                f"degradation=blur works on images (C, H, W), got data of shape {tuple(data_shape)}"
            )
        self.basis.setup(data_shape)
        if statistics is not None:
            c, h, w = data_shape
            self.coef_std = statistics.dct_variance.float().sqrt()
            # DC coefficient of the orthonormal DCT-II = channel mean × √(HW)
            self.dc_prior.fit(
                statistics.channel_means.float() * math.sqrt(h * w),
                n_components=self.prior_components,
            )

    def noise_sigma(self, t: Tensor) -> Tensor:
        return torch.where(t > 0, torch.full_like(t, self.noise), torch.zeros_like(t))

    def alpha_sigma(self, schedule, t: Tensor, data_shape):
        sigma_blur = schedule.sigma_blur(t.float()).view(-1, 1, 1, 1)
        alpha = torch.exp(-self.basis.frequencies_squared * sigma_blur**2 / 2).clamp(min=ALPHA_MIN)
        return alpha, self.noise_sigma(t.float()).view(-1, 1, 1, 1)

    def noise_cond(self, schedule, t: Tensor) -> Tensor:
        return t.float()

    def prior(self, schedule, shape, device=None, generator=None) -> Tensor:
        if self.coef_std.numel() == 0:
            raise RuntimeError(
                "the blur prior is fitted from dataset statistics: build the process with build()"
            )
        batch = shape[0]
        c0 = self.coef_std * torch.randn(shape, generator=generator)
        c0[:, :, 0, 0] = self.dc_prior.sample(batch, generator=generator)
        alpha, sigma = self.alpha_sigma(schedule, torch.ones(batch), shape[1:])
        c1 = alpha.cpu() * c0 + sigma.cpu() * torch.randn(shape, generator=generator)
        return self.basis.inverse(c1.to(self.coef_std.device)).to(device)

    def prior_log_prob(self, schedule, x1: Tensor) -> Tensor:
        """log p_1 of `prior`: non-DC coefficients N(0, α(1)² s_i² + σ(1)²); the DC per channel
        the fitted GMM convolved with N(0, σ(1)² I)."""
        if self.coef_std.numel() == 0 or not self.dc_prior.fitted:
            raise RuntimeError("the blur prior is not fitted: build the process with build()")
        c1 = self.basis(x1.double())
        alpha, sigma = self.alpha_sigma(
            schedule, torch.ones(len(x1), device=x1.device), x1.shape[1:]
        )
        alpha, sigma = alpha.double().expand_as(c1), sigma.double().expand_as(c1)
        log_p = normal_log_prob(c1, alpha**2 * self.coef_std.double() ** 2 + sigma**2)
        log_p[:, :, 0, 0] = 0  # the DC coefficients are scored jointly below
        gmm = self.dc_prior
        a_dc, s_dc = alpha[:, :, 0, 0], sigma[:, :, 0, 0]  # (B, C)
        cov = gmm.scale_tril.double() @ gmm.scale_tril.double().transpose(-1, -2)  # (K, C, C)
        cov = (
            a_dc[:, None, :, None] * cov * a_dc[:, None, None, :]
            + torch.diag_embed(s_dc**2)[:, None]
        )
        mvn = torch.distributions.MultivariateNormal(a_dc[:, None] * gmm.means.double(), cov)
        log_dc = torch.logsumexp(
            torch.log(gmm.weights.double()) + mvn.log_prob(c1[:, None, :, 0, 0]), 1
        )
        return log_p.flatten(1).sum(1) + log_dc


class BlurNoise(Blur):
    """Soft Diffusion: the same blur, with noise growing geometrically from noise_min to noise_max."""

    def __init__(self, noise_min: float = 0.01, noise_max: float = 1.0, prior_components: int = 1):
        super().__init__(noise=noise_min, prior_components=prior_components)
        if not 0 < noise_min < noise_max:
            raise ValueError(
                f"degradation needs 0 < noise_min < noise_max, got {noise_min}, {noise_max}"
            )
        self.noise_min, self.noise_max = float(noise_min), float(noise_max)

    def noise_sigma(self, t: Tensor) -> Tensor:
        sigma = self.noise_min * (self.noise_max / self.noise_min) ** t
        return torch.where(t > 0, sigma, torch.zeros_like(t))
