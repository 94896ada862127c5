"""Cold Diffusion samplers (Bansal et al. 2022, §3.2-3.3), for any process with degrade(x0, t):

    cold_naive (Alg. 1)  x̂0 = R(x_s, s),  x_{s−1} = D(x̂0, s−1)
    cold       (Alg. 2)  x̂0 = R(x_s, s),  x_{s−1} = x_s − D(x̂0, s) + D(x̂0, s−1)

R is the denoiser (a restoration network predicting x0), D = process.degrade. Alg. 2 (the paper's
choice; Alg. 1 is the baseline) cancels any error e of x̂0 = x0 + e whose effect D(x0 + e, s) −
D(x0, s) does not depend on s, e.g. a constant shift under circular blur (§3.3). Both are deterministic (no noise is added, so the
generator is unused) and need no full-rank noise. With the `uniform` grid and num_steps = T they
step once per degradation level, t_i = i/T. Shapes: x (B, *data_shape).
"""

from diffusion_lab.process import expand_t
from diffusion_lab.samplers.common import Loop


def _run(loop: Loop, x, corrected: bool):
    for i, t, t_next in loop.steps(x):
        state = loop.state(t, x)
        x0 = loop.denoise(x, state)
        x_next = loop.process.degrade(x0, expand_t(t_next, x.shape[0], x.device))
        x = x - loop.process.degrade(x0, state.t) + x_next if corrected else x_next
        loop.report(x, i, t, x0)
    return x


def cold_naive(denoiser, process, x, *, num_steps, grid, **call):
    """Alg. 1: re-degrade the restored estimate to the next level, x_{s−1} = D(x̂0, s−1)."""
    return _run(Loop(denoiser, process, num_steps, grid, "cold_naive", **call), x, False)


def cold(denoiser, process, x, *, num_steps, grid, **call):
    """Alg. 2: x_{s−1} = x_s − D(x̂0, s) + D(x̂0, s−1), robust to errors in x̂0."""
    return _run(Loop(denoiser, process, num_steps, grid, "cold", **call), x, True)
