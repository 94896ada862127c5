"""Euler and Heun solvers of the probability-flow ODE (Karras et al. 2022, Alg. 1-2).

Written in the scaled variables of EDM §2/App. B.2, per component in the basis:
    x̃ = U x / α,  σ̃ = σ/α,   dx̃/dσ̃ = (x̃ − U D(x)) / σ̃,
which for VE is EDM's dx/dσ = (x − D)/σ and for VP absorbs the scaling s(t) = α. Euler in these
variables is DDIM with η = 0. Heun adds the trapezoidal correction except on the last step (σ̃ = 0),
and optional churn (Alg. 2): σ̃̂ = σ̃(1 + γ), γ = min(S_churn/N, √2 − 1) for σ̃ ∈ [S_tmin, S_tmax].
Churn needs an isotropic process (one σ̃ per sample to raise).
"""

import math

import torch

from diffusion_lab.process import expand_t
from diffusion_lab.samplers.common import divide, randn_like, report, state_at, steps


def _slope(denoiser, process, x_tilde, state, ratio, cond):
    x = process.basis.inverse(state.alpha * x_tilde)
    x0 = denoiser(x, state, cond)
    return divide(x_tilde - process.basis(x0), ratio), x0  # σ = 0 components do not move


def _solve(
    denoiser, process, x, num_steps, grid, cond, generator, callback, progress, second_order, churn
):
    s_churn, s_tmin, s_tmax, s_noise = churn
    if s_churn > 0 and not process.isotropic:
        raise ValueError(
            "sampler.s_churn > 0 needs an isotropic degradation (one noise level per sample)"
        )
    gamma_max = min(s_churn / num_steps, math.sqrt(2) - 1)
    name = "heun" if second_order else "euler"
    for i, t, t_next in steps(process, num_steps, grid, x, progress, name):
        st, sn = state_at(process, t, x), state_at(process, t_next, x)
        x_tilde, ratio = process.basis(x) / st.alpha, st.sigma / st.alpha
        if gamma_max > 0 and s_tmin <= float(ratio.flatten()[0]) <= s_tmax:
            ratio_hat = ratio * (1 + gamma_max)
            x_tilde = x_tilde + (ratio_hat**2 - ratio**2).sqrt() * s_noise * randn_like(
                x_tilde, generator
            )
            t_hat = process.t_from_logsnr(-2 * torch.log(ratio_hat.flatten()[:1])).clamp(0, 1)
            st, ratio = state_at(process, expand_t(t_hat[0], x.shape[0], x.device), x), ratio_hat
        d, x0 = _slope(denoiser, process, x_tilde, st, ratio, cond)
        ratio_next = sn.sigma / sn.alpha
        x_next = x_tilde + (ratio_next - ratio) * d
        if second_order and float(t_next) > 0:
            d_next, _ = _slope(denoiser, process, x_next, sn, ratio_next, cond)
            x_next = x_tilde + (ratio_next - ratio) * (d + d_next) / 2
        x = process.basis.inverse(sn.alpha * x_next)
        report(callback, x, i, t, x0)
    return x


def euler(
    denoiser,
    process,
    x,
    *,
    num_steps,
    grid,
    cond=None,
    generator=None,
    callback=None,
    progress=False,
):
    return _solve(
        denoiser,
        process,
        x,
        num_steps,
        grid,
        cond,
        generator,
        callback,
        progress,
        False,
        (0.0, 0.0, math.inf, 1.0),
    )


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
    cond=None,
    generator=None,
    callback=None,
    progress=False,
):
    churn = (float(s_churn), float(s_tmin), float(s_tmax), float(s_noise))
    return _solve(
        denoiser, process, x, num_steps, grid, cond, generator, callback, progress, True, churn
    )


euler.requires = heun.requires = ("linear",)
