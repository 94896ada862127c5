"""Consistency distillation (Song et al. 2023, Alg. 2) and its boundary-condition parameterisation.

Written in EDM's scaled variables (Karras et al. 2022, App. B.2): x̃ = x/α, σ̃ = σ/α, so that a VP
process is the VE process of the papers (α = 1 gives their formulas unchanged). The consistency
function maps any point of a PF-ODE trajectory to its start (an x0 estimate):

    f_θ(x, σ̃) = c_skip(σ̃) x̃ + c_out(σ̃) F_θ(c_in x, c_noise),
    c_skip = σ_d² / ((σ̃ − σ_min)² + σ_d²),   c_out = (σ̃ − σ_min) σ_d / √(σ_d² + σ̃²)   (App. C),

with EDM's c_in and c_noise, so f(x, σ_min) = x̃ (the boundary condition) and, at σ_min = 0, f is
EDM's denoiser exactly: F_θ starts as the teacher's network (precond=edm teachers only).

Training (Alg. 2): an N-point Karras grid σ̃_1 = σ_min < ... < σ̃_N = σ_max (mapped to t through the
schedule), n ~ U{1, ..., N−1}, x_{n+1} = α x0 + σ z at t_{n+1}; one teacher ODE step (Euler = DDIM
η = 0, or Heun) gives x̂_n; loss d(f_θ(x_{n+1}), f_θ⁻(x̂_n)) with the target network θ⁻ ← μ θ⁻ +
(1 − μ) θ. `solver: data` is consistency training (Alg. 3): x̂_n = α x0 + σ z at t_n with the same
z, no teacher call. Distances: l2 (mean square over pixels) or pseudo-Huber
√(‖a − b‖² + c²) − c with c = 0.00054 √d (Song & Dhariwal 2023, §3.3); LPIPS is not offered (it
needs ImageNet-trained weights, unavailable offline).

Shapes: x (B, *data_shape); t (B,); α, σ (B, 1, ..., 1) (isotropic processes only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion_lab.distill.progressive import ddim_step
from diffusion_lab.precond import _Precond
from diffusion_lab.samplers.grids import karras

SOLVERS = ("heun", "euler", "data")
DISTANCES = ("pseudo_huber", "l2")


class ConsistencyPrecond(_Precond):
    """(c_skip, c_out, c_in) of the consistency parameterisation above, in x units:
    f = (c_skip/α) x + c_out F(c_in x), c_in = 1/√(α²σ_d² + σ²) as EDM's."""

    def __init__(self, sigma_data: float = 0.5, sigma_min: float = 0.002, per_component=False):
        super().__init__(sigma_data, per_component)
        if self.per_component:
            raise ValueError(
                "precond.per_component=true is not supported by the consistency "
                "parameterisation: set precond.per_component=false"
            )
        if sigma_min < 0:
            raise ValueError(f"precond.sigma_min must be >= 0, got {sigma_min}")
        self.sigma_min = float(sigma_min)

    def coefficients(self, alpha, sigma, sd):
        ratio = sigma / alpha  # σ̃
        c_skip = sd**2 / ((ratio - self.sigma_min) ** 2 + sd**2)
        c_out = (ratio - self.sigma_min) * sd * torch.rsqrt(sd**2 + ratio**2)
        return c_skip / alpha, c_out, torch.rsqrt(alpha**2 * sd**2 + sigma**2)

    def __repr__(self) -> str:
        return f"ConsistencyPrecond(sigma_data={self.sigma_data}, sigma_min={self.sigma_min})"


def ode_step(teacher, process, x: Tensor, t: Tensor, s: Tensor, solver: str = "heun", cond=None):
    """One PF-ODE step of the teacher from t to s (B,) in (x̃, σ̃): Euler (= DDIM η = 0) or Heun
    (Karras et al. 2022, Alg. 1: the Euler slope averaged with the slope at the Euler point)."""
    x_s, x0 = ddim_step(teacher, process, x, t, s, cond)
    if solver == "euler":
        return x_s
    st, ss = process.state(t), process.state(s)
    ratio_t, ratio_s = st.sigma / st.alpha, ss.sigma / ss.alpha
    x0_s = teacher(x_s, ss, cond)
    d_t = (x / st.alpha - x0) / ratio_t
    d_s = (x_s / ss.alpha - x0_s) / ratio_s
    return ss.alpha * (x / st.alpha + (ratio_s - ratio_t) * (d_t + d_s) / 2)


def pseudo_huber(a: Tensor, b: Tensor, c: float | None = None) -> Tensor:
    """√(‖a − b‖² + c²) − c per sample (B,), c = 0.00054 √d by default (Song & Dhariwal 2023)."""
    d = math.prod(a.shape[1:])
    c = 0.00054 * math.sqrt(d) if c is None else c
    return torch.sqrt(((a - b) ** 2).flatten(1).sum(1) + c**2) - c


class ConsistencyDistillation:
    """The `distill=consistency` method: one round, a consistency model sampled in 1-4 steps."""

    name = "consistency"
    rounds = 1
    sampler_choice = "consistency"  # configs/sampler/consistency.yaml
    has_target_net = True  # θ⁻ (distill/module.py keeps it beside the student)
    needs_edm_teacher = True  # F_θ starts as the teacher's EDM-preconditioned network

    def __init__(
        self,
        num_points: int = 18,
        rho: float = 7.0,
        sigma_min: float = 0.002,
        sigma_max: float | None = None,
        solver: str = "heun",
        mu: float = 0.95,
        distance: str = "pseudo_huber",
        huber_c: float | None = None,
        steps_per_round: int = 500,
        sample_steps: int = 1,
    ):
        if not isinstance(num_points, int) or num_points < 2:
            raise ValueError(f"distill.num_points must be an integer >= 2, got {num_points}")
        if solver not in SOLVERS:
            raise ValueError(f"distill.solver={solver!r} is not one of {', '.join(SOLVERS)}")
        if distance not in DISTANCES:
            raise ValueError(f"distill.distance={distance!r} is not one of {', '.join(DISTANCES)}")
        if not 0 <= mu < 1:
            raise ValueError(f"distill.mu must lie in [0, 1), got {mu}")
        if not 0 < sigma_min:
            raise ValueError(f"distill.sigma_min must be > 0, got {sigma_min}")
        self.num_points, self.rho, self.solver, self.mu = num_points, float(rho), solver, mu
        self.sigma_min, self.sigma_max = float(sigma_min), sigma_max
        self.distance, self.huber_c = distance, huber_c
        self.steps_per_round, self.sample_steps = int(steps_per_round), int(sample_steps)

    def student_steps(self, round_index: int) -> int:
        return self.sample_steps

    def precond_config(self, sigma_data) -> dict:
        return {
            "_target_": "diffusion_lab.distill.consistency.ConsistencyPrecond",
            "sigma_data": sigma_data,
            "sigma_min": self.sigma_min,
            "per_component": False,
        }

    def sampler_config(self, round_index: int) -> dict:
        """Multistep consistency sampling (samplers/consistency.py) on the training grid's ends."""
        return {
            "_target_": "diffusion_lab.samplers.consistency.consistency",
            "_partial_": True,
            "num_steps": self.sample_steps,
            "sigma_min": self.sigma_min,
            "sigmas": None,
            "grid": {
                "_target_": "diffusion_lab.samplers.grids.karras",
                "_partial_": True,
                "rho": self.rho,
                "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max,
            },
        }

    def times(self, process) -> Tensor:
        """t_1 < ... < t_N of the Karras grid (σ̃_min → σ̃_max), shape (N,)."""
        t = karras(process, self.num_points, self.rho, self.sigma_min, self.sigma_max)
        return t[:-1].flip(0)

    def loss(self, student, target_net, teacher, process, x0: Tensor, cond) -> Tensor:
        """d(f_θ(x_{n+1}), f_θ⁻(x̂_n)) per sample (B,); n and z from the step-seeded global RNG."""
        ts = self.times(process).to(x0.device)
        n = torch.randint(0, self.num_points - 1, (x0.shape[0],)).to(x0.device)
        t_hi, t_lo = ts[n + 1], ts[n]
        x_hi, z, state_hi = process.sample(x0, t_hi)
        with torch.no_grad():
            if self.solver == "data":
                x_lo = process.sample(x0, t_lo, z)[0]
            else:
                x_lo = ode_step(teacher, process, x_hi, t_hi, t_lo, self.solver, cond)
            y = target_net(x_lo, process.state(t_lo), cond)
        pred = student(x_hi, state_hi, cond)
        if self.distance == "l2":
            return ((pred - y) ** 2).flatten(1).mean(1)
        return pseudo_huber(pred, y, self.huber_c)
