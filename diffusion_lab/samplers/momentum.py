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

from diffusion_lab.samplers.common import Loop, divide


def _run(loop: Loop, x, update):
    basis = loop.process.basis
    for i, t, t_next in loop.steps(x):
        st, ss = loop.state(t, x), loop.target(t_next, x)
        x0 = loop.denoise(x, st)
        c, c0 = basis(x), basis(x0)
        noise = loop.noise(c) if float(t_next) > 0 else torch.zeros_like(c)
        x = basis.inverse(torch.where(st.sigma > 0, update(c, c0, st, ss, noise), c))
        loop.report(x, i, t, x0)
    return x


def _momentum_update(c, c0, st, ss, noise):
    g = (st.sigma**2 - ss.sigma**2).clamp(min=0)
    y_t, y_s = st.alpha * c0, ss.alpha * c0
    return c + (y_s - y_t) - divide(g, st.sigma**2) * (c - y_t) + g.sqrt() * noise


def _naive_update(c, c0, st, ss, noise):
    return ss.alpha * c0 + ss.sigma * noise


def momentum(denoiser, process, x, *, num_steps, grid, **call):
    """`call`: cond, generator, callback, progress (samplers/common.Loop)."""
    return _run(Loop(denoiser, process, num_steps, grid, "momentum", **call), x, _momentum_update)


def soft_naive(denoiser, process, x, *, num_steps, grid, **call):
    """Re-corrupt ĉ0 from scratch at every step (Soft Diffusion's baseline)."""
    return _run(Loop(denoiser, process, num_steps, grid, "soft_naive", **call), x, _naive_update)


momentum.requires = soft_naive.requires = ("linear",)
