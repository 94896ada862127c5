"""Ancestral sampling (Ho et al. 2020, Alg. 2): x_s ~ q(x_s | x_t, x0 = D(x_t)), per component.

With α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α_{t|s}² σ_s² (Kingma et al. 2021, eq. 33-34):
    μ = (α_{t|s} σ_s² / σ_t²) x_t + (α_s σ²_{t|s} / σ_t²) x̂0,    Var = σ²_{t|s} σ_s² / σ_t².
"""

import torch

from diffusion_lab.samplers.common import divide, randn_like, report, state_at, steps


def sample(
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
    basis = process.basis
    for i, t, t_next in steps(process, num_steps, grid, x, progress, "ancestral"):
        st, ss = state_at(process, t, x), state_at(process, t_next, x)
        x0 = denoiser(x, st, cond)
        a_ts = st.alpha / ss.alpha
        var_ts = (st.sigma**2 - a_ts**2 * ss.sigma**2).clamp(min=0)
        c_t = basis(x)
        mean = divide(a_ts * ss.sigma**2 * c_t + ss.alpha * var_ts * basis(x0), st.sigma**2)
        std = divide(var_ts * ss.sigma**2, st.sigma**2).sqrt()
        c = mean + std * randn_like(mean, generator)
        x = basis.inverse(torch.where(st.sigma > 0, c, c_t))  # σ_t = 0: clean, kept
        report(callback, x, i, t, x0)
    return x


sample.requires = ("linear",)
