"""The discrete-time DDPM variational bound in bits/dim (Ho et al. 2020, eq. 5; Kingma et al. 2021).

A T-step VP diffusion with latents z_i = α_i x + σ_i ε at t_i = t_min + (1 − t_min) i/T, i = 1..T
(t_min = 0: DDPM's grid t_i = i/T, DESIGN §4):

    −log p(x) ≤ L_T + Σ_{i=2}^T L_{i−1} + L_0,
    L_T     = KL(q(z_T | x) ‖ N(0, σ_T² I)) = ½ SNR(1) ‖x‖²   (the process's prior; same variance),
    L_{i−1} = KL(q(z_{i−1} | z_i, x) ‖ p(z_{i−1} | z_i)) = ½ (SNR(t_{i−1}) − SNR(t_i)) ‖x − D(z_i)‖²,

the last with the reverse step's variance equal to the posterior's (Ho et al.'s σ_t² = β̃_t; Kingma
et al. 2021, eq. 13 and App. E), each KL estimated with one draw of z_i ~ q(z_i | x). The decoder
L_0 = −log p(x | z_1) has mean D(z_1) and std σ(t_1)/α(t_1) (= √β_1 for DDPM's linear schedule):

  num_bins = 256  discretised Gaussian (Ho et al. eq. 13): the mass of the bin [x − 1/255, x + 1/255]
                  (open-ended at ±1) for data on the grid 2k/255 − 1; the bound is on the discrete
                  NLL −log₂ P(k)/D, comparable with dequantised PF-ODE bits/dim and needing no offset.
  num_bins = None continuous Gaussian density: a bound on −log p(x) of continuous data, no offset.

Both are valid bounds for every T. They approach the NLL as T grows only if the log-SNR steps
shrink everywhere, i.e. if SNR(t_1) stays finite: with t_min = 0 and a schedule whose log-SNR is
+∞ at t = 0 (the default cosine, linear β) the first steps jump by a fixed factor in SNR whatever
T is (×4 for the cosine, ×2 for linear β) and the bound stays loose by a T-independent amount
(≈ 1.9 bits/dim for the cosine, 0.4 for linear β, on Gaussian toy data). A small t_min > 0 (e.g.
σ/α(t_min) = 0.01, see likelihood.default_t_min) removes that; it is what Kingma et al.'s
bounded log-SNR range does.
Shapes: x0 (B, *data_shape), D = prod(data_shape); every term is (B,) in nats.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffusion_lab.process import expand_t
from diffusion_lab.samplers.common import randn_like


@dataclass
class VariationalBound:
    bits_per_dim: Tensor  # (B,) (L_T + Σ L_{i−1} + L_0) / (D ln 2)
    prior: Tensor  # (B,) L_T, nats
    diffusion: Tensor  # (B,) Σ_{i=2}^T L_{i−1}, nats
    decoder: Tensor  # (B,) L_0, nats
    nfe: int  # denoiser evaluations (= num_steps)


def _check_variance_preserving(process, device) -> None:
    t = torch.linspace(0, 1, 11, device=device)
    state = process.state(t)
    total = state.alpha.double() ** 2 + state.sigma.double() ** 2
    if not (process.isotropic and process.linear) or (total - 1).abs().max() > 1e-4:
        raise ValueError(
            "the DDPM variational bound needs an isotropic variance-preserving process "
            f"(α² + σ² = 1), got degradation={type(process.degradation).__name__}; use the PF-ODE "
            "bits/dim (diffusion_lab.metrics.likelihood.bits_per_dim) instead"
        )


def _log_normal_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Φ(upper) − Φ(lower)), computed on the side of 0 where it does not cancel."""
    flip = lower + upper > 0  # mass(a, b) = mass(−b, −a)
    a, b = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1(log_a - log_b).clamp(max=-1e-300))


def _decoder_nll(x: Tensor, mean: Tensor, std: Tensor, num_bins: int | None) -> Tensor:
    if num_bins is None:
        return (0.5 * ((x - mean) / std) ** 2 + torch.log(std) + 0.5 * math.log(2 * math.pi)).sum(1)
    half = 1.0 / (num_bins - 1)
    lower = torch.where(x <= -1 + half / 2, -math.inf, (x - half - mean) / std)
    upper = torch.where(x >= 1 - half / 2, math.inf, (x + half - mean) / std)
    return -_log_normal_mass(lower, upper).sum(1)


@torch.no_grad()
def ddpm_vlb_bits_per_dim(
    denoiser,
    process,
    x0: Tensor,
    *,
    num_steps: int = 1000,
    num_bins: int | None = 256,
    t_min: float = 0.0,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> VariationalBound:
    """The bound above for x0 (B, *data_shape) in [−1, 1]; with num_bins, x0 is first rounded to the
    grid 2k/(num_bins − 1) − 1. t_min: where the grid starts (0 = DDPM). Costs num_steps denoiser
    calls on the batch; noise comes from `generator`."""
    _check_variance_preserving(process, x0.device)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    batch = x0.shape[0]
    x = x0.double()
    if num_bins is not None:
        x = (
            torch.round((x + 1) / 2 * (num_bins - 1)).clamp(0, num_bins - 1) * 2 / (num_bins - 1)
            - 1
        )
    times = t_min + (1 - t_min) * torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    grid = process.state(times.float().to(x0.device))
    alphas, sigmas = grid.alpha.double().flatten(), grid.sigma.double().flatten()  # (T + 1,)
    snr = alphas**2 / sigmas**2  # SNR(t_0) = ∞ is never used

    prior = 0.5 * snr[-1] * x.flatten(1).pow(2).sum(1)
    diffusion = torch.zeros(batch, dtype=torch.float64, device=x0.device)
    for i in range(num_steps, 0, -1):  # isotropic: z_i = α_i x + σ_i ε in data coordinates
        state = process.state(expand_t(float(times[i]), batch, x0.device))
        z = alphas[i] * x + sigmas[i] * randn_like(x, generator)
        x_hat = denoiser(z.float(), state, cond).double()
        if i > 1:
            diffusion += 0.5 * (snr[i - 1] - snr[i]) * (x - x_hat).flatten(1).pow(2).sum(1)
    std = (sigmas[1] / alphas[1]).expand(batch, 1)
    decoder = _decoder_nll(x.flatten(1), x_hat.flatten(1), std, num_bins)
    total = prior + diffusion + decoder
    bpd = total / (math.prod(x0.shape[1:]) * math.log(2))
    return VariationalBound(bpd, prior, diffusion, decoder, num_steps)
