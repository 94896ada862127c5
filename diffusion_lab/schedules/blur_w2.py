"""A blur schedule with equal Wasserstein-2 steps, estimated on the data (Daras et al. 2022, §3.3).

Soft Diffusion picks the corruption levels so that consecutive distributions are equally far
apart. With the coupling that shares x0, in the DCT basis (second moments m_i = E[c_i²]):

    W2(σ, σ')² ≤ E‖x_σ − x_σ'‖² = Σ_i m_i (exp(−λ_i σ²/2) − exp(−λ_i σ'²/2))².

Refining the steps gives an arc length in u = log σ_B with an analytic speed,

    s(u) = ∫ v(u) du,   v(u) = √(Σ_i m_i (dα_i/du)²),   dα_i/du = −λ_i σ² α_i,

which we integrate (Simpson) on a fine grid of u in [log σ_min, log σ_max], normalise to t ∈ [0, 1]
and invert: σ_B(t) = exp(u(t)) with u(t) the cubic Hermite interpolant through the knots
(t_k, u_k) with their exact slopes du/dt = s(u_max)/v(u_k). That is C¹ in t, so α(t) has a
continuous derivative and adaptive ODE solvers (the likelihood's dopri5) see a smooth field;
a piecewise-linear table has a kink at every knot. σ_B(0) = 0 (clean data).
"""

import math

import torch
from torch import Tensor

from diffusion_lab.schedules.blur import BlurSchedule


class BlurW2(BlurSchedule):
    needs_statistics = True

    def __init__(self, sigma_min: float = 0.5, sigma_max: float = 8.0, resolution: int = 512):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"schedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        if resolution < 2:
            raise ValueError(f"schedule.resolution must be >= 2, got {resolution}")
        self.sigma_min, self.sigma_max, self.resolution = (
            float(sigma_min),
            float(sigma_max),
            int(resolution),
        )
        # the fitted table (R,), (R,), (R − 1, 2): buffers, sized by setup() or by the checkpoint
        for name in ("grid_t", "grid_u", "tangent"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.float64))

    def setup(self, degradation, statistics) -> None:
        if statistics is None:  # restoring: the table comes from the checkpoint
            return
        if statistics.dct_variance is None:
            raise ValueError(
                "schedule=blur_w2 needs dataset statistics of image data (DCT second moments)"
            )
        second_moment = statistics.dct_variance.double().clone()
        dc = degradation.basis(statistics.mean.double().unsqueeze(0).float()).double()[0]
        second_moment += dc**2  # E[c²] = Var[c] + E[c]²
        lam = degradation.basis.frequencies_squared.double()

        def speed(u: Tensor) -> Tensor:  # v(u), u (R,) → (R,)
            var = torch.exp(2 * u).view(-1, 1, 1, 1)
            d_alpha = lam * var * torch.exp(-lam * var / 2)
            return (second_moment * d_alpha**2).flatten(1).sum(1).sqrt()

        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        u = torch.linspace(lo, hi, self.resolution, dtype=torch.float64)
        h = (hi - lo) / (self.resolution - 1)
        v, v_mid = speed(u), speed(u[:-1] + h / 2)
        step = h / 6 * (v[:-1] + 4 * v_mid + v[1:])  # Simpson on each interval
        arc = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(step, 0)])
        t = arc / arc[-1]
        # Hermite tangents per interval in units of Δu: (du/dt)_k · Δt_k = Δs_k / v_k; where v
        # underflows (nothing left to blur) fall back to the secant. Fritsch–Carlson keeps u(t)
        # monotone where the exact slopes would overshoot.
        secant = torch.full_like(step, h)
        left = torch.where(v[:-1] > 0, step / v[:-1].clamp(min=1e-300), secant)
        right = torch.where(v[1:] > 0, step / v[1:].clamp(min=1e-300), secant)
        norm = torch.sqrt((left / h) ** 2 + (right / h) ** 2)
        scale = torch.where(norm > 3, 3 / norm, torch.ones_like(norm))
        self.grid_t, self.grid_u = t, u
        self.tangent = torch.stack([left * scale, right * scale], 1)  # (R − 1, 2)

    def sigma_blur(self, t: Tensor) -> Tensor:
        if self.grid_t.numel() == 0:
            raise RuntimeError(
                "schedule=blur_w2 is estimated from data: build the process with dataset "
                "statistics (build()) or load a checkpoint that holds its table"
            )
        grid_t, grid_u = self.grid_t.to(t.device), self.grid_u.to(t.device)
        tangent = self.tangent.to(t.device)
        tt = t.double().clamp(0, 1).contiguous()
        k = (torch.searchsorted(grid_t, tt) - 1).clamp(0, len(grid_t) - 2)
        dt = grid_t[k + 1] - grid_t[k]
        w = torch.where(dt > 0, (tt - grid_t[k]) / dt.clamp(min=1e-300), 0.0).clamp(0, 1)
        w2, w3 = w * w, w * w * w
        u = (
            (2 * w3 - 3 * w2 + 1) * grid_u[k]
            + (w3 - 2 * w2 + w) * tangent[k, 0]
            + (-2 * w3 + 3 * w2) * grid_u[k + 1]
            + (w3 - w2) * tangent[k, 1]
        )
        sigma = torch.exp(u).to(t.dtype if t.is_floating_point() else torch.float32)
        return torch.where(t > 0, sigma, torch.zeros_like(sigma))
