"""Samplers: pure functions over a denoiser, no hidden step state (k-diffusion style).

    sample(denoiser, process, x_T, *, num_steps, grid, cond=None, generator=None,
           callback=None, progress=False, **knobs) -> x_0

`grid(process, num_steps)` gives the N + 1 times t_0 = t_max > ... > t_N = 0 (samplers/grids.py).
`callback` receives {'x', 'i', 't', 'denoised'} after every step. Updates are written per component
in the process's basis, so they hold for isotropic and per-component corruptions alike.
"""
