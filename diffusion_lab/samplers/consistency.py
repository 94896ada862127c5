"""Multistep consistency sampling (Song et al. 2023, Alg. 1) with a consistency-model denoiser.

The denoiser is a consistency function f(x, σ̃) (distill/consistency.py: any point of a PF-ODE
trajectory → its x0 end), so one call maps noise to data. With N steps at noise levels
σ̃_1 > ... > σ̃_N (σ̃ = σ/α, EDM's scaled variables):

    x0 ← f(x_T, σ̃_1);   for n = 2..N:  x̃ = x0 + √(σ̃_n² − σ̃_min²) z,  x0 ← f(α_n x̃, σ̃_n).

Time points: `sigmas` (σ̃ values, descending, one per step) when given; else the first N points of
grid(process, N + 1) (the N + 1-point grid without its σ_min point: re-noising to σ_min would
spend a step on nothing). NFE = num_steps. Isotropic processes (one σ̃ per sample).
"""

import torch

from diffusion_lab.samplers.common import Loop


def _times(process, num_steps: int, grid, sigmas) -> torch.Tensor:
    if sigmas is None:
        return grid(process, num_steps + 1)[:num_steps]
    sigmas = torch.as_tensor(list(sigmas), dtype=torch.float64)
    if len(sigmas) != num_steps or not bool((sigmas > 0).all()):
        raise ValueError(
            f"sampler.sigmas must hold num_steps={num_steps} values σ/α > 0, got {sigmas.tolist()}"
        )
    return process.t_from_logsnr(-2 * torch.log(sigmas)).clamp(0, 1)


def consistency(denoiser, process, x, *, num_steps, grid, sigma_min=0.002, sigmas=None, **call):
    """`sigma_min`: the consistency function's boundary σ̃ (re-noising adds √(σ̃² − σ̃_min²)).
    `call`: cond, generator, callback, progress (samplers/common.Loop)."""
    if num_steps < 1:
        raise ValueError(f"sampler.num_steps must be >= 1, got {num_steps}")
    loop = Loop(denoiser, process, num_steps, grid, "consistency", **call)
    ts = _times(process, num_steps, grid, sigmas).to(
        x.device, torch.promote_types(x.dtype, torch.float32)
    )
    x0 = x
    for i, t in enumerate(ts):
        state = loop.state(t, x)
        if i > 0:
            ratio = (state.sigma / state.alpha).clamp(min=sigma_min)
            x = state.alpha * (x0 + (ratio**2 - sigma_min**2).sqrt() * loop.noise(x0))
        x0 = loop.denoise(x, state)
        loop.report(x0, i, t, x0)
    return x0


consistency.requires = ("linear", "isotropic")
