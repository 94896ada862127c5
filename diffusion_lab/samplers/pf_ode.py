"""Euler and Heun solvers of the probability-flow ODE (Karras et al. 2022, Alg. 1-2).

Written in the scaled variables of EDM §2/App. B.2, per component in the basis:
    x̃ = U x / α,  σ̃ = σ/α,   dx̃/dσ̃ = (x̃ − U D(x)) / σ̃,
which for VE is EDM's dx/dσ = (x − D)/σ and for VP absorbs the scaling s(t) = α. Euler in these
variables is DDIM with η = 0. Heun adds the trapezoidal correction except on the last step (σ̃ = 0),
and optional churn (Alg. 2): σ̃̂ = σ̃(1 + γ), γ = min(S_churn/N, √2 − 1) for σ̃ ∈ [S_tmin, S_tmax].
Churn needs an isotropic process (one σ̃ per sample to raise), and σ̃̂ is capped at σ̃(1), the
largest level the schedule (and so the network) knows: t̂ = t(σ̃̂) is then exact, never clamped.
"""

import math

import torch

from diffusion_lab.process import expand_t
from diffusion_lab.samplers.common import Loop, divide


def check_churn(process, s_churn: float) -> None:
    """Churn raises one σ̃ per sample, so it needs an isotropic process (build.py asks the same)."""
    if s_churn > 0 and not process.isotropic:
        raise ValueError(
            "s_churn > 0 needs an isotropic degradation (one noise level per sample); this one "
            "is per-component. Set sampler.s_churn=0."
        )


def _slope(loop: Loop, x_tilde, state, ratio):
    basis = loop.process.basis
    x0 = loop.denoise(basis.inverse(state.alpha * x_tilde), state)
    return divide(x_tilde - basis(x0), ratio), x0  # σ = 0 components do not move


def _solve(
    loop: Loop, x, second_order: bool, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0
):
    process = loop.process
    check_churn(process, s_churn)
    gamma_max = min(s_churn / loop.num_steps, math.sqrt(2) - 1)
    if gamma_max > 0:  # σ̃̂ never exceeds σ̃(1): the network is told the noise level it sees
        top = process.state(torch.ones(1, device=x.device, dtype=torch.float64))
        ratio_top = float((top.sigma / top.alpha).flatten()[0])
    for i, t, t_next in loop.steps(x):
        st, sn = loop.state(t, x), loop.target(t_next, x)
        x_tilde, ratio = process.basis(x) / st.alpha, st.sigma / st.alpha
        if gamma_max > 0 and s_tmin <= float(ratio.flatten()[0]) <= s_tmax:
            ratio_hat = torch.maximum(ratio, (ratio * (1 + gamma_max)).clamp(max=ratio_top))
            extra = (ratio_hat**2 - ratio**2).clamp(min=0).sqrt()
            x_tilde = x_tilde + extra * s_noise * loop.noise(x_tilde)
            t_hat = process.t_from_logsnr(-2 * torch.log(ratio_hat.flatten()[:1])).clamp(0, 1)
            st, ratio = loop.state(expand_t(t_hat[0], x.shape[0], x.device), x), ratio_hat
        d, x0 = _slope(loop, x_tilde, st, ratio)
        ratio_next = sn.sigma / sn.alpha
        x_next = x_tilde + (ratio_next - ratio) * d
        if second_order and float(t_next) > 0:
            d_next, _ = _slope(loop, x_next, sn, ratio_next)
            x_next = x_tilde + (ratio_next - ratio) * (d + d_next) / 2
        x = process.basis.inverse(sn.alpha * x_next)
        loop.report(x, i, t, x0)
    return x


def euler(denoiser, process, x, *, num_steps, grid, **call):
    """First-order steps. `call`: cond, generator, callback, progress (samplers/common.Loop)."""
    return _solve(Loop(denoiser, process, num_steps, grid, "euler", **call), x, False)


def heun(
    denoiser,
    process,
    x,
    *,
    num_steps,
    grid,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=math.inf,
    s_noise=1.0,
    **call,
):
    """EDM's Alg. 2; the churn knobs S_churn, S_tmin, S_tmax, S_noise as in the paper."""
    loop = Loop(denoiser, process, num_steps, grid, "heun", **call)
    churn = dict(s_churn=float(s_churn), s_tmin=float(s_tmin), s_tmax=float(s_tmax))
    return _solve(loop, x, True, **churn, s_noise=float(s_noise))


euler.requires = heun.requires = ("linear",)
