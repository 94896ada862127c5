"""Cold Diffusion samplers (Bansal et al. 2022, §3.2-3.3), for any process with degrade(x0, t):

    naive    (Alg. 1)  x̂0 = R(x_s, s),  x_{s−1} = D(x̂0, s−1)
    improved (Alg. 2)  x̂0 = R(x_s, s),  x_{s−1} = x_s − D(x̂0, s) + D(x̂0, s−1)

R is the denoiser (a restoration network predicting x0), D = process.degrade. Alg. 2 (the paper's
choice; Alg. 1 is the baseline) cancels any error e of x̂0 = x0 + e whose effect D(x0 + e, s) −
D(x0, s) does not depend on s, e.g. a constant shift under circular blur (§3.3). Both are deterministic (no noise is added, so the
generator is unused) and need no full-rank noise. With the `uniform` grid and num_steps = T they
step once per degradation level, t_i = i/T. Shapes: x (B, *data_shape).
"""

from diffusion_lab.process import expand_t
from diffusion_lab.samplers.common import report, state_at, steps


def _run(denoiser, process, x, num_steps, grid, cond, callback, progress, desc, corrected):
    for i, t, t_next in steps(process, num_steps, grid, x, progress, desc):
        state = state_at(process, t, x)
        x0 = denoiser(x, state, cond)
        x_next = process.degrade(x0, expand_t(t_next, x.shape[0], x.device))
        x = x - process.degrade(x0, state.t) + x_next if corrected else x_next
        report(callback, x, i, t, x0)
    return x


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
    """Alg. 1: re-degrade the restored estimate to the next level, x_{s−1} = D(x̂0, s−1)."""
    return _run(
        denoiser, process, x, num_steps, grid, cond, callback, progress, "cold_naive", False
    )


def improved(
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
    """Alg. 2: x_{s−1} = x_s − D(x̂0, s) + D(x̂0, s−1), robust to errors in x̂0."""
    return _run(denoiser, process, x, num_steps, grid, cond, callback, progress, "cold", True)
