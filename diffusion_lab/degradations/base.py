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
    degrade(x0, t)                           -> the noise-free E[x_t | x0]   (non-linear only)
"""

import torch
from torch import nn

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
