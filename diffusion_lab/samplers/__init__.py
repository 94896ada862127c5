"""Samplers: pure functions over a denoiser, no hidden step state (k-diffusion style).

    sampler(denoiser, process, x_T, *, num_steps, grid, **knobs, **call) -> x_0

`call` is what every sampler hands its loop unchanged (samplers/common.Loop): cond=None,
generator=None, callback=None, progress=False. `knobs` are the sampler's own (eta, s_churn, ...).
The function name is the config name: `sampler=ddim` is diffusion_lab.samplers.ddim.ddim.

`grid(process, num_steps)` gives the N + 1 times t_0 = t_max > ... > t_N = 0 (samplers/grids.py).
`callback` receives {'x', 'i', 't', 'denoised'} after every step. Updates are written per component
in the process's basis, so they hold for isotropic and per-component corruptions alike.
"""
