"""Ancestral sampling (Ho et al. 2020, Alg. 2): x_s ~ q(x_s | x_t, x0 = D(x_t)), per component.

With α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α_{t|s}² σ_s² (Kingma et al. 2021, eq. 33-34):
    μ = (α_{t|s} σ_s² / σ_t²) x_t + (α_s σ²_{t|s} / σ_t²) x̂0,    Var = σ²_{t|s} σ_s² / σ_t².
"""

import torch

from diffusion_lab.samplers.common import Loop, divide


def ancestral(denoiser, process, x, *, num_steps, grid, **call):
    """`call`: cond, generator, callback, progress (samplers/common.Loop)."""
    loop = Loop(denoiser, process, num_steps, grid, "ancestral", **call)
    basis = process.basis
    for i, t, t_next in loop.steps(x):
        st, ss = loop.state(t, x), loop.target(t_next, x)
        x0 = loop.denoise(x, st)
        a_ts = st.alpha / ss.alpha
        var_ts = (st.sigma**2 - a_ts**2 * ss.sigma**2).clamp(min=0)
        c_t = basis(x)
        mean = divide(a_ts * ss.sigma**2 * c_t + ss.alpha * var_ts * basis(x0), st.sigma**2)
        std = divide(var_ts * ss.sigma**2, st.sigma**2).sqrt()
        c = mean + std * loop.noise(mean)
        x = basis.inverse(torch.where(st.sigma > 0, c, c_t))  # σ_t = 0: clean, kept
        loop.report(x, i, t, x0)
    return x


ancestral.requires = ("linear",)
