"""Reverse-SDE samplers, per component in the basis (Song et al. 2021; GUD samples this way).

The forward process c_t = α_t c0 + σ_t z solves dc = f c dt + g dw with f = d log α/dt and
g² = dσ²/dt − 2 f σ². Its reverse (Song et al. 2021, eq. 6) with score −(c − α ĉ0)/σ² is

    euler_maruyama:  c_s = c_t − Δ(log α) c_t + G ∇log p_t(c_t) + √G ε,
                     Δ(log α) = log α_t − log α_s,  G = σ_t² − σ_s² − 2 Δ(log α) σ_t²  (≥ 0),

the Euler–Maruyama step from t to s < t. `pc` follows each step with `corrector_steps` Langevin
moves at s (Song et al. 2021, Alg. 4), preconditioned per component: step ε_i = 2 (r σ_i)², with
r the signal-to-noise knob `snr`. The last step (s = 0) returns the denoised estimate, as usual.
Components with σ_t = 0 (clean, e.g. GUD components whose clock has not started) do not move.
"""

import torch

from diffusion_lab.samplers.common import divide, randn_like, report, state_at, steps


def _score(c, state, c0_hat):
    return divide(-(c - state.alpha * c0_hat), state.sigma**2)


def _em_step(denoiser, process, x, st, ss, cond, generator):
    basis = process.basis
    x0 = denoiser(x, st, cond)
    c, c0 = basis(x), basis(x0)
    dlog_alpha = torch.log(st.alpha) - torch.log(ss.alpha)
    g2 = (st.sigma**2 - ss.sigma**2 - 2 * dlog_alpha * st.sigma**2).clamp(min=0)
    c = c - dlog_alpha * c + g2 * _score(c, st, c0) + g2.sqrt() * randn_like(c, generator)
    return basis.inverse(c), x0


def _langevin(denoiser, process, x, state, cond, generator, snr):
    basis = process.basis
    c = basis(x)
    step = 2 * (snr * state.sigma) ** 2
    c = (
        c
        + step * _score(c, state, basis(denoiser(x, state, cond)))
        + (2 * step).sqrt() * randn_like(c, generator)
    )
    return basis.inverse(c)


def _reverse(
    denoiser,
    process,
    x,
    num_steps,
    grid,
    cond,
    generator,
    callback,
    progress,
    corrector_steps,
    snr,
    name,
):
    for i, t, t_next in steps(process, num_steps, grid, x, progress, name):
        st, ss = state_at(process, t, x), state_at(process, t_next, x)
        x_next, x0 = _em_step(denoiser, process, x, st, ss, cond, generator)
        if float(t_next) == 0:
            x_next = x0  # final denoising step
        else:
            for _ in range(corrector_steps):
                x_next = _langevin(denoiser, process, x_next, ss, cond, generator, snr)
        x = x_next
        report(callback, x, i, t, x0)
    return x


def euler_maruyama(
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
    return _reverse(
        denoiser, process, x, num_steps, grid, cond, generator, callback, progress, 0, 0.0, "sde"
    )


def pc(
    denoiser,
    process,
    x,
    *,
    num_steps,
    grid,
    corrector_steps=1,
    snr=0.1,
    cond=None,
    generator=None,
    callback=None,
    progress=False,
):
    if corrector_steps < 0 or snr <= 0:
        raise ValueError("sampler=pc needs corrector_steps >= 0 and snr > 0")
    return _reverse(
        denoiser,
        process,
        x,
        num_steps,
        grid,
        cond,
        generator,
        callback,
        progress,
        corrector_steps,
        snr,
        "pc",
    )


euler_maruyama.requires = pc.requires = ("linear",)
