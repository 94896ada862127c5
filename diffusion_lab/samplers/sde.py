"""Reverse-SDE samplers, per component in the basis (Song et al. 2021; GUD samples this way).

The forward process c_t = α_t c0 + σ_t z solves dc = f c dt + g dw with f = d log α/dt and
g² = dσ²/dt − 2 f σ². Its reverse (Song et al. 2021, eq. 6) with score −(c − α ĉ0)/σ² is

    sde:  c_s = c_t − Δ(log α) c_t + G ∇log p_t(c_t) + √G ε,
          Δ(log α) = log α_t − log α_s,  G = σ_t² − σ_s² − 2 Δ(log α) σ_t²  (≥ 0),

the Euler–Maruyama step from t to s < t. `pc` follows each step with `corrector_steps` Langevin
moves at s (Song et al. 2021, Alg. 4), preconditioned per component: step ε_i = 2 (r σ_i)², with
r the signal-to-noise knob `snr`. The last step (s = 0) returns the denoised estimate, as usual.
Components with σ_t = 0 (clean, e.g. GUD components whose clock has not started) do not move.
"""

import torch

from diffusion_lab.samplers.common import Loop, divide


def _score(c, state, c0_hat):
    return divide(-(c - state.alpha * c0_hat), state.sigma**2)


def _em_step(loop: Loop, x, st, ss):
    basis = loop.process.basis
    x0 = loop.denoise(x, st)
    c, c0 = basis(x), basis(x0)
    dlog_alpha = torch.log(st.alpha) - torch.log(ss.alpha)
    g2 = (st.sigma**2 - ss.sigma**2 - 2 * dlog_alpha * st.sigma**2).clamp(min=0)
    c = c - dlog_alpha * c + g2 * _score(c, st, c0) + g2.sqrt() * loop.noise(c)
    return basis.inverse(c), x0


def _langevin(loop: Loop, x, state, snr):
    basis = loop.process.basis
    c = basis(x)
    step = 2 * (snr * state.sigma) ** 2
    c = (
        c
        + step * _score(c, state, basis(loop.denoise(x, state)))
        + (2 * step).sqrt() * loop.noise(c)
    )
    return basis.inverse(c)


def _reverse(loop: Loop, x, corrector_steps: int = 0, snr: float = 0.0):
    for i, t, t_next in loop.steps(x):
        st, ss = loop.state(t, x), loop.target(t_next, x)
        x_next, x0 = _em_step(loop, x, st, ss)
        if float(t_next) == 0:
            x_next = x0  # final denoising step
        else:
            for _ in range(corrector_steps):
                x_next = _langevin(loop, x_next, ss, snr)
        x = x_next
        loop.report(x, i, t, x0)
    return x


def sde(denoiser, process, x, *, num_steps, grid, **call):
    """Euler–Maruyama on the reverse SDE. `call`: cond, generator, callback, progress."""
    return _reverse(Loop(denoiser, process, num_steps, grid, "sde", **call), x)


def pc(denoiser, process, x, *, num_steps, grid, corrector_steps=1, snr=0.1, **call):
    """Euler–Maruyama predictor, `corrector_steps` Langevin correctors at signal-to-noise `snr`."""
    if corrector_steps < 0 or snr <= 0:
        raise ValueError("sampler=pc needs corrector_steps >= 0 and snr > 0")
    loop = Loop(denoiser, process, num_steps, grid, "pc", **call)
    return _reverse(loop, x, corrector_steps, snr)


sde.requires = pc.requires = ("linear",)
