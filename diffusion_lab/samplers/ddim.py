"""DDIM (Song et al. 2021, eq. 12), per component in the basis:

    ẑ = (c_t − α_t ĉ0) / σ_t,    c_s = α_s ĉ0 + sqrt(σ_s² − s²) ẑ + s z,
    s² = η² σ²_{t|s} σ_s² / σ_t²,  σ²_{t|s} = σ_t² − (α_t/α_s)² σ_s².
η = 0 is the deterministic sampler (Euler on the probability-flow ODE in σ/α); η = 1 is ancestral.
With constant σ and η = 0 it is Cold Diffusion's Alg. 2 step on the mean (see tests).
"""

import torch

from diffusion_lab.samplers.common import Loop, divide


def ddim(denoiser, process, x, *, num_steps, grid, eta=0.0, **call):
    """`call`: cond, generator, callback, progress (samplers/common.Loop)."""
    loop = Loop(denoiser, process, num_steps, grid, "ddim", **call)
    basis = process.basis
    for i, t, t_next in loop.steps(x):
        st, ss = loop.state(t, x), loop.target(t_next, x)
        x0 = loop.denoise(x, st)
        c0, c_t = basis(x0), basis(x)
        z_hat = divide(c_t - st.alpha * c0, st.sigma)
        var_ts = (st.sigma**2 - (st.alpha / ss.alpha) ** 2 * ss.sigma**2).clamp(min=0)
        s2 = eta**2 * divide(var_ts * ss.sigma**2, st.sigma**2)
        c = ss.alpha * c0 + (ss.sigma**2 - s2).clamp(min=0).sqrt() * z_hat
        if eta > 0:
            c = c + s2.sqrt() * loop.noise(c)
        x = basis.inverse(torch.where(st.sigma > 0, c, c_t))  # σ_t = 0: clean, kept
        loop.report(x, i, t, x0)
    return x


ddim.requires = ("linear",)
