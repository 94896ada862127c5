"""The forward (corruption) process: a degradation composed with a schedule.

Every linear corruption has the form (DESIGN §3), for an orthonormal basis U (c = U x):

    x_t = Uᵀ( α(t) ⊙ U x0 + σ(t) ⊙ z ),   z ~ N(0, I),   t ∈ [0, 1].

Shapes: x is (B, *data_shape) — images (B, C, H, W), vectors (B, D). α and σ live in basis
coordinates and broadcast against x: (B, 1, ..., 1) for isotropic processes, (B, *data_shape)
per component. t is (B,). t = 0 is clean data, t = 1 the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class State:
    """Everything downstream code needs to know about the corruption at time t."""

    t: Tensor  # (B,)
    alpha: Tensor  # broadcasts against x, in basis coordinates
    sigma: Tensor  # broadcasts against x, in basis coordinates
    noise_cond: Tensor  # (B,) finite scalar fed to the backbone's noise embedding

    @property
    def snr(self) -> Tensor:
        return (self.alpha / self.sigma) ** 2


class fp32:
    """Context: run diffusion arithmetic in float32 even inside an autocast region."""

    def __init__(self, x: Tensor):
        self._ctx = torch.autocast(device_type=x.device.type, enabled=False)

    def __enter__(self):
        self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def expand_t(t: float | Tensor, batch: int, device: torch.device) -> Tensor:
    """A scalar or (B,) time as a float32 (B,) tensor (float64 if t is a float64 tensor)."""
    dtype = torch.float64 if isinstance(t, Tensor) and t.dtype == torch.float64 else torch.float32
    t = torch.as_tensor(t, dtype=dtype, device=device)
    return t.expand(batch).clone() if t.ndim == 0 else t


class ForwardProcess(nn.Module):
    """ForwardProcess = degradation ∘ schedule, on data of a fixed shape.

    The degradation turns the schedule's scalar level at t into per-component α, σ in its basis;
    this class owns the generic parts: broadcasting, drawing x_t, the prior, capability flags.
    """

    def __init__(self, degradation: nn.Module, schedule, data_shape: tuple[int, ...]):
        super().__init__()
        self.degradation = degradation
        self.schedule = schedule
        self.data_shape = tuple(int(s) for s in data_shape)

    # -- capability flags (checked once by build.py) -------------------------------------
    @property
    def isotropic(self) -> bool:
        return self.degradation.isotropic

    @property
    def full_rank_noise(self) -> bool:
        return self.degradation.full_rank_noise

    @property
    def linear(self) -> bool:
        return self.degradation.linear

    @property
    def has_prior(self) -> bool:
        return self.degradation.has_prior

    @property
    def basis(self) -> nn.Module:
        return self.degradation.basis

    # -- the corruption -------------------------------------------------------------------
    def state(self, t: Tensor) -> State:
        """State at times t (B,)."""
        alpha, sigma = self.degradation.alpha_sigma(self.schedule, t, self.data_shape)
        noise_cond = self.degradation.noise_cond(self.schedule, t)
        return State(t=t, alpha=alpha, sigma=sigma, noise_cond=noise_cond)

    @property
    def needs_statistics(self) -> bool:
        schedule_needs = self.schedule is not None and self.schedule.needs_statistics
        return self.degradation.needs_statistics or schedule_needs

    def setup(self, statistics=None) -> ForwardProcess:
        """Build the data-dependent parts (basis, prior, estimated schedule); see build.py.
        `statistics` None: the fitted buffers are left empty for a checkpoint to fill."""
        self.degradation.setup(self.data_shape, statistics)
        if self.schedule is not None:  # None: Cold operators, which read no schedule
            self.schedule.setup(self.degradation, statistics)
        return self

    def degrade(self, x0: Tensor, t: Tensor) -> Tensor:
        """The noise-free mean E[x_t | x0]: Uᵀ(α ⊙ U x0), or the Cold operator itself."""
        with fp32(x0):
            if not self.linear:
                return self.degradation.degrade(x0.float(), t)
            alpha = self.state(t).alpha
            return self.basis.inverse(alpha * self.basis(x0.float()))

    def sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None):
        """Draw x_t ~ q(x_t | x0). Returns (x_t, noise z in basis coordinates, state)."""
        with fp32(x0):
            state = self.state(t)
            z = torch.randn_like(x0.float()) if noise is None else noise
            if not self.linear:  # Cold operators: deterministic mean plus (small) noise
                return self.degradation.degrade(x0.float(), t) + state.sigma * z, z, state
            c0 = self.basis(x0.float())
            x_t = self.basis.inverse(state.alpha * c0 + state.sigma * z)
        return x_t, z, state

    def prior(self, batch: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_1 from the prior. Gaussian processes: N(0, σ(1)² I) since α(1) ≈ 0."""
        return self.degradation.prior(self.schedule, (batch, *self.data_shape), device, generator)

    def prior_log_prob(self, x1: Tensor) -> Tensor:
        """log p_1(x1) (B,), nats: the density of what `prior` draws (each degradation's own)."""
        return self.degradation.prior_log_prob(self.schedule, x1)

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        """Invert the schedule: the t at which log(α²/σ²) = logsnr (isotropic Gaussian only)."""
        if not self.schedule.has_logsnr:
            raise TypeError(f"{type(self.schedule).__name__} has no log-SNR inverse")
        return self.schedule.t_from_logsnr(logsnr)

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}"
