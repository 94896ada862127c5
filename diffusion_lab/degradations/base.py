"""The protocol every degradation follows (DESIGN §3). ForwardProcess composes it with a schedule.

    isotropic        one α, σ per sample, shaped (B, 1, ..., 1); else per component (B, *data_shape)
    full_rank_noise  σ_i(t) > 0 for every component when t > 0, so the score exists everywhere and
                     score/ODE samplers (ancestral, ddim, euler, heun, sde, pc) apply
    linear           x_t = Uᵀ(α ⊙ U x0 + σ ⊙ z) holds (diagonal in `basis`). False for Cold
                     Diffusion operators, which define `degrade(x0, t)` themselves
    schedule_type    the schedule class it reads; None when it ignores the `schedule` group
    needs_statistics True when `setup` needs dataset statistics (PCA basis, whitening, fitted prior)
    has_prior        False for restoration-only operators (snow): nothing to generate from at t = 1

Methods (t is (B,), x is (B, *data_shape)):
    setup(data_shape, statistics)            build buffers once (basis matrices, prior fit)
    alpha_sigma(schedule, t, data_shape)     -> (α, σ) in basis coordinates
    noise_cond(schedule, t)                  -> (B,) finite scalar for the backbone's embedding
    prior(schedule, shape, device, generator)-> a draw of x_1
    prior_log_prob(schedule, x1)             -> (B,) log-density (nats) of what `prior` draws;
                                                the PF-ODE likelihood ends there (metrics/likelihood.py)
    degrade(x0, t)                           -> the noise-free E[x_t | x0]   (non-linear only)
"""

import math

import torch
from torch import Tensor, nn

from diffusion_lab.bases import Identity


class Degradation(nn.Module):
    isotropic = False
    full_rank_noise = False
    linear = True
    schedule_type = None
    needs_statistics = False
    has_prior = True

    def __init__(self):
        super().__init__()
        self.basis = Identity()

    def setup(self, data_shape, statistics) -> None:
        """Build whatever depends on the data's shape or statistics. Default: nothing."""

    def prior(self, schedule, shape, device=None, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def prior_log_prob(self, schedule, x1: Tensor) -> Tensor:
        raise NotImplementedError(
            f"no closed-form prior log-density for degradation {type(self).__name__}: pass "
            "prior=callable(x1) -> (B,) to bits_per_dim"
        )


def normal_log_prob(c: Tensor, var: Tensor) -> Tensor:
    """log N(c; 0, var), elementwise."""
    return -0.5 * (c**2 / var + torch.log(2 * math.pi * var))


def gaussian_prior_log_prob(degradation: Degradation, schedule, x1: Tensor) -> Tensor:
    """log p_1(x1) (B,) for the prior x_1 = Uᵀ(σ(1) ⊙ z): N(0, σ_i(1)²) per basis component, in
    float64 (the priors of the Gaussian, GUD and mask degradations)."""
    t1 = torch.ones(x1.shape[0], device=x1.device)
    _, sigma = degradation.alpha_sigma(schedule, t1, tuple(x1.shape[1:]))
    c1 = degradation.basis(x1.double())
    return normal_log_prob(c1, sigma.double() ** 2).flatten(1).sum(1)
