"""Soft Diffusion's samplers for corruptions x_t = C_t x0 + σ_t z (Daras et al. 2022, §4).

With ĉ0 = U D(x_t), ŷ_t = α_t ⊙ ĉ0 (the re-corrupted estimate) and G = σ_t² − σ_s² per component:

    naive     c_s = α_s ĉ0 + σ_s ε                                   (re-corrupt from scratch)
    momentum  c_s = c_t + (ŷ_s − ŷ_t) − (G / σ_t²)(c_t − ŷ_t) + √G ε

The momentum sampler keeps the part of x_t the model did not explain: its first correction moves
along the corruption (Cold Diffusion's Alg. 2 step), its second is an annealed Langevin/score step
on the noise that removes exactly the variance G. With σ ≡ 0 it is Cold Diffusion's Alg. 2, and
`naive` is Alg. 1 plus noise. The last step (s = 0) returns D(x_t); no noise is added there.
Components with σ_t = 0 are clean and do not move.
"""

import torch

from diffusion_lab.samplers.common import divide, randn_like, report, state_at, steps


def _run(denoiser, process, x, num_steps, grid, cond, generator, callback, progress, update, name):
    basis = process.basis
    for i, t, t_next in steps(process, num_steps, grid, x, progress, name):
        st, ss = state_at(process, t, x), state_at(process, t_next, x)
        x0 = denoiser(x, st, cond)
        c, c0 = basis(x), basis(x0)
        noise = randn_like(c, generator) if float(t_next) > 0 else torch.zeros_like(c)
        x = basis.inverse(torch.where(st.sigma > 0, update(c, c0, st, ss, noise), c))
        report(callback, x, i, t, x0)
    return x


def _momentum_update(c, c0, st, ss, noise):
    g = (st.sigma**2 - ss.sigma**2).clamp(min=0)
    y_t, y_s = st.alpha * c0, ss.alpha * c0
    return c + (y_s - y_t) - divide(g, st.sigma**2) * (c - y_t) + g.sqrt() * noise


def _naive_update(c, c0, st, ss, noise):
    return ss.alpha * c0 + ss.sigma * noise


def momentum(
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
    return _run(
        denoiser,
        process,
        x,
        num_steps,
        grid,
        cond,
        generator,
        callback,
        progress,
        _momentum_update,
        "momentum",
    )


def naive(
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
    return _run(
        denoiser,
        process,
        x,
        num_steps,
        grid,
        cond,
        generator,
        callback,
        progress,
        _naive_update,
        "naive",
    )


momentum.requires = naive.requires = ("linear",)
