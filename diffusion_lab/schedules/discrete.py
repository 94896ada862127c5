"""The exact T-step DDPM schedule (Ho et al. 2020, §4 and eq. 4), on the grid t_i = i/T.

    β_j = β_start + (j − 1)/(T − 1) (β_end − β_start),   j = 1..T   (torch.linspace, float64)
    ᾱ(i/T) = Π_{j ≤ i} (1 − β_j),   i = 0..T   (ᾱ(0) = 1: t = 0 is clean data)
    λ(t) = log(ᾱ/(1 − ᾱ)) = −log(expm1(−log ᾱ(t)))

Convention (DESIGN §4): DDPM's step i (1-based, x_i ~ q(x_i | x_0) with ᾱ_i) sits at t = i/T, so
diffusers' 0-based timestep k is t = (k + 1)/T. Between grid points log ᾱ is linear in t, i.e. β is
piecewise constant in continuous time: on t ∈ [(i − 1)/T, i/T] the process runs at the rate
−T log(1 − β_i), which reaches exactly ᾱ_i at t = i/T. That interpolant is strictly monotone, so
`logsnr` and `t_from_logsnr` are exact inverses and exact at the grid points. Beyond t = 1 it
continues with the last rate (λ(t) for t > 1, t(λ) for λ < λ(1)), as the closed-form schedules do;
t < 0 is read as t = 0 (λ = +∞). The table is config (recomputed from the arguments), not fitted
state, and is kept in float64; results are returned in the input's dtype. dλ/dt is piecewise
constant, with T small jumps (of relative size ~1/i at t_i): adaptive ODE solvers (the likelihood's
dopri5) see them as kinks, unlike the C^∞ closed-form schedules.

schedule=linear (LinearBeta) is this schedule's continuous limit T → ∞: ᾱ(1) differs from the
T = 1000 product by about 7%. Shapes: t (B,) → (B,) (any shape, elementwise).
"""

import torch
from torch import Tensor

from diffusion_lab.schedules.base import LogSNRSchedule


class DiscreteLinearBeta(LogSNRSchedule):
    def __init__(
        self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ):
        super().__init__()
        if num_train_timesteps < 1 or not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                "schedule needs num_train_timesteps >= 1 and 0 < beta_start <= beta_end < 1, got "
                f"{num_train_timesteps}, {beta_start}, {beta_end}"
            )
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        betas = self.betas()
        # −log ᾱ at t_i = i/T, i = 0..T: increasing from 0 (a plain tensor, not a buffer: it is
        # config, and a float64 buffer would be cast by module.to(dtype))
        self._neg_log_alpha_bar = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(-torch.log1p(-betas), 0)]
        )

    def betas(self) -> Tensor:
        """β_1..β_T (T,), float64."""
        return torch.linspace(
            self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float64
        )

    def alphas_cumprod(self) -> Tensor:
        """ᾱ_1..ᾱ_T (T,), float64: diffusers' `alphas_cumprod`, ᾱ at t = (k + 1)/T."""
        return torch.exp(-self._neg_log_alpha_bar[1:])

    def _table(self, device) -> Tensor:
        return self._neg_log_alpha_bar.to(device)

    def neg_log_alpha_bar(self, t: Tensor) -> Tensor:
        """−log ᾱ(t), piecewise linear in t through the grid values (float64)."""
        table, steps = self._table(t.device), self.num_train_timesteps
        u = t.double().clamp(min=0) * steps
        k = u.floor().clamp(0, steps - 1)
        i = k.long()
        return table[i] + (u - k) * (table[i + 1] - table[i])

    def logsnr(self, t: Tensor) -> Tensor:
        dtype = t.dtype if t.is_floating_point() else torch.float32
        return (-torch.log(torch.expm1(self.neg_log_alpha_bar(t)))).to(dtype)

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        table, steps = self._table(logsnr.device), self.num_train_timesteps
        n = torch.nn.functional.softplus(-logsnr.double())  # −log ᾱ = log(1 + e^{−λ})
        i = (torch.searchsorted(table, n.contiguous(), right=True) - 1).clamp(0, steps - 1)
        w = (n - table[i]) / (table[i + 1] - table[i])
        return ((i + w) / steps).to(logsnr.dtype)
