"""Sampling grids: `grid(process, num_steps) -> t` of shape (N + 1,), t_0 = t_max > ... > t_N = 0.

uniform  t_i = t_max − i (t_max − t_min)/(N − 1) for i < N; t_min = t_max/N by default, so the
         T-step DDPM grid t_i = i/T is `uniform` with N = T.
karras   noise-to-signal ratio σ̃ = σ/α spaced as σ̃_i = (σ̃_max^{1/ρ} + i/(N−1)(σ̃_min^{1/ρ} −
         σ̃_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5), mapped to t through the schedule.
         Defaults: σ̃_max = min(80, σ̃(1)), σ̃_min by step count (`default_sigma_min`), both
         chosen from measurements (docs/benchmarks.md §7).
log_snr  λ = log(α²/σ²) uniform between λ(t_max) and λ_max, mapped to t (Lu et al. 2022, DPM-Solver).
The last point, t = 0, is clean data: samplers land there with α = 1, σ = 0 even where a schedule
is truncated (σ(0) > 0), so the last step is a full denoise. Log-SNR schedules only for karras /
log_snr; their ranges are clipped to the schedule's [λ(1), λ(0)].
"""

import math

import torch
from torch import Tensor


def _finish(t: Tensor) -> Tensor:
    return torch.cat([t.float(), torch.zeros(1)])


def _spaced(num_steps: int, start: float, end: float) -> Tensor:
    return (
        torch.linspace(start, end, num_steps, dtype=torch.float64)
        if num_steps > 1
        else torch.tensor([start], dtype=torch.float64)
    )


def uniform(process, num_steps: int, t_max: float = 1.0, t_min: float | None = None) -> Tensor:
    t_min = t_max / num_steps if t_min is None else t_min
    return _finish(_spaced(num_steps, t_max, t_min))


def logsnr_range(process) -> tuple[float, float]:
    """(λ(1), λ(0)) of the schedule; λ(0) = +inf unless it is truncated (σ(0) > 0)."""
    if not process.schedule.has_logsnr:
        raise TypeError(
            f"this grid needs a log-SNR schedule, got {type(process.schedule).__name__}"
        )
    lam = process.schedule.logsnr(torch.tensor([1.0, 0.0], dtype=torch.float64))
    return float(lam[0]), float(lam[1])


SIGMA_MAX = 80.0  # EDM's σ_max (Karras et al. 2022, Table 1)


def default_sigma_min(num_steps: int) -> float:
    """σ̃_min by step count, measured (docs/benchmarks.md §7): with few steps, a step spent below
    σ̃ ≈ 0.05 costs more than stopping there and denoising. 0.05 up to 10 steps, 0.02 up to 25,
    EDM's 0.002 above: the best of 0.002/0.02/0.05/0.1 at 10 and 20 steps on both the Gaussian
    mixture and digits (FID). At 5 steps they disagree (mixture 0.05-0.1, digits 0.02)."""
    return 0.05 if num_steps <= 10 else 0.02 if num_steps <= 25 else 0.002


def karras(
    process,
    num_steps: int,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """σ̃ from sigma_max (None: min(80, σ̃(1))) to sigma_min (None: `default_sigma_min`), both
    clipped to the schedule's own range [σ̃(0), σ̃(1)], so a truncated schedule never gets
    repeated t = 0 points (zero-length steps)."""
    lam_1, lam_0 = logsnr_range(process)
    hi, lo = math.exp(-lam_1 / 2), math.exp(-lam_0 / 2)
    sigma_max = min(SIGMA_MAX, hi) if sigma_max is None else min(max(sigma_max, lo), hi)
    sigma_min = default_sigma_min(num_steps) if sigma_min is None else sigma_min
    sigma_min = min(max(sigma_min, lo), sigma_max)
    ramp = _spaced(num_steps, sigma_max ** (1 / rho), sigma_min ** (1 / rho)) ** rho
    t = process.t_from_logsnr(-2 * torch.log(ramp))
    return _finish(t.clamp(0, 1))


def log_snr(process, num_steps: int, logsnr_max: float = 12.4) -> Tensor:
    """λ uniform from λ(1) to min(logsnr_max, λ(0))."""
    lam_1, lam_0 = logsnr_range(process)
    lam = _spaced(num_steps, lam_1, min(logsnr_max, lam_0))
    return _finish(process.t_from_logsnr(lam).clamp(0, 1))


def starting_at(process, num_steps: int, *, grid, t_start: float) -> Tensor:
    """`grid` cut to start at t_start (for restoring an image already degraded to t_start)."""
    if not 0 < t_start <= 1:
        raise ValueError(f"start_t must lie in (0, 1], got {t_start}")
    t = grid(process, num_steps)
    return torch.cat([torch.tensor([float(t_start)]), t[t < t_start]])


karras.needs_logsnr = log_snr.needs_logsnr = True
