"""Log-likelihood and bits/dim through the probability-flow ODE (Song et al. 2021, §4.3, App. D.2).

In basis coordinates c = U x the process x_t = Uᵀ(α ⊙ U x0 + σ ⊙ z) is, per component, the SDE
dc = f c dt + g dw with f = α'/α and g² = (σ²)' − 2 f σ². Its probability-flow ODE, with the score
from the denoiser (Tweedie: ∇_c log p_t = (α ⊙ U D(x) − c)/σ²), is

    dc/dt = v(c, t) = f ⊙ c + (σ'/σ − f) ⊙ (c − α ⊙ U D(x)),                          (Song eq. 13)

and the instantaneous change of variables (Chen et al. 2018; Song et al. App. D.2) gives

    log p_{t_min}(c(t_min)) = log p_1(c(1)) + ∫_{t_min}^1 ∇·v(c(t), t) dt.

α'(t), σ'(t) come from forward-mode autodiff through `process.state(t)`, so every schedule and
per-component degradation works without derivative code of its own. ∇·v is a Hutchinson estimate
εᵀ(∂v/∂c)ε with one Rademacher probe ε per sample, fixed for the whole solve (Grathwohl et al.
2019), or the exact trace (one backward pass per dimension, small D only). Rademacher probes get
every diagonal entry exactly, so a Jacobian that is diagonal in the basis has an exact estimate.

Endpoint. The ODE cannot start at t = 0 (σ = 0, the score is singular), so it starts at t_min > 0
from c(t_min) = α(t_min) ⊙ U x0 and adds Σ log α_i(t_min): the reported density is that of
x̂ = Uᵀ(C_{t_min} / α(t_min)), i.e. for a perfect denoiser the data smoothed by Gaussian noise of
noise-to-signal ratio r = σ/α(t_min) per component. The default t_min is the largest t with
max_i r_i(t) ≤ 1e-3 (`default_t_min`): t ≈ 1e-5 for the linear-β VP (σ ≈ 1e-3, Song et al.'s
choice), 6.4e-4 for the cosine VP, 0.2 for EDM's ρ = 7 schedule. Smoothing by r changes log p by
O(r²) per dimension for densities smooth on the scale r — negligible beside a 1/128 bin. Processes
with a noise floor (blur, blur_noise, mask) never get below it: there t_min = 1e-5 and the result
is the density of the data smoothed at the floor's ratio σ/α(0⁺), which is the most their model
defines (heat dissipation at σ_B(0⁺) > 0 makes this large for high frequencies).

Prior. log p_1 is the log-density of what `process.prior` draws (`process.prior_log_prob`,
owned by each degradation): exact for the
Gaussian (VP, VE), GUD and mask priors, N(0, σ(1)²) per component, and for blur/blur_noise, whose
non-DC coefficients are N(0, α(1)² s_i² + σ(1)²) and whose per-channel DC is the fitted GMM
convolved with N(0, σ(1)² I). The result is therefore the exact likelihood of the generative model
"draw the prior, integrate the PF-ODE", up to the ODE solver's tolerance and the Hutchinson noise.

Dequantisation (Theis et al. 2016; Ho et al. 2020 §4). 8-bit data x = 2k/255 − 1, k ∈ {0..255},
become y = k + u ∈ [0, 256), u ~ U[0, 1)^D, i.e. x̃ = 2y/256 − 1 ∈ [−1, 1). The densities relate by
p_y(y) = p_x̃(x̃) (2/256)^D, and Jensen gives −log₂ P(k) ≤ E_u[−log₂ p_y(k + u)], so

    bits/dim = −log p_x̃(x̃) / (D ln 2) − log₂(2/256) = −log p_x̃(x̃) / (D ln 2) + 7,

an upper bound on the discrete model's NLL (DESIGN §4: offset 7 bits for [−1, 1] data).

Shapes: x0 (B, *data_shape), D = prod(data_shape); every per-sample result is (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq
from torch import Tensor
from torch.func import jvp

from diffusion_lab.process import State, expand_t

_ADAPTIVE_RK = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


@dataclass
class Likelihood:
    bits_per_dim: Tensor  # (B,) −log p/(D ln 2), plus log₂(num_bins/2) when dequantised
    log_prob: Tensor  # (B,) nats: log-density of the (dequantised) x in [−1, 1] space
    prior_log_prob: Tensor  # (B,) nats: log p_1 at the end of the flow
    nfe: int  # denoiser evaluations (the solver's function evaluations, rejected steps included)
    t_min: float  # where the ODE started
    rtol: float  # the solver settings, to report beside the number (DESIGN §4)
    atol: float
    method: str


def default_t_min(
    process, noise_ratio: float = 1e-3, lowest: float = 1e-5, device: torch.device | None = None
) -> float:
    """Largest t with max_i σ_i(t)/α_i(t) ≤ noise_ratio (bisection in log t; the ratio grows with
    t), or `lowest` when even that exceeds it (processes with a noise floor)."""

    def ratio(t: float) -> float:
        s = process.state(torch.tensor([t], device=device))
        return float((s.sigma / s.alpha).max())

    if ratio(lowest) > noise_ratio:
        return lowest
    if ratio(1.0) <= noise_ratio:
        return 1.0
    lo, hi = math.log(lowest), 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(math.exp(mid)) <= noise_ratio else (lo, mid)
    return math.exp(lo)


def uniform_dequantize(
    x: Tensor, num_bins: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """x = 2k/(num_bins − 1) − 1 → x̃ = 2(k + u)/num_bins − 1 with u ~ U[0, 1) (x rounded to k)."""
    k = torch.round((x.double() + 1) / 2 * (num_bins - 1)).clamp(0, num_bins - 1)
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=torch.float64).to(x.device)
    return 2 * (k + u) / num_bins - 1


def _coefficients(process, t: Tensor) -> tuple[State, Tensor, Tensor]:
    """State at t (B,), f = α'/α and k = σ'/σ − f, by forward-mode autodiff through the process."""

    def alpha_sigma(t):
        s = process.state(t)
        return s.alpha, s.sigma

    (alpha, sigma), (d_alpha, d_sigma) = jvp(alpha_sigma, (t,), (torch.ones_like(t),))
    f = d_alpha / alpha
    return process.state(t), f, d_sigma / sigma - f


class _FlowWithDivergence:
    """The ODE right-hand side on (c, Δ): (v(c, t), ∇·v). Counts denoiser calls in `nfe`."""

    def __init__(self, denoiser, process, cond, probe: Tensor | None):
        self.denoiser, self.process, self.cond, self.probe = denoiser, process, cond, probe
        self.nfe = 0

    def velocity(self, t: Tensor, c: Tensor) -> Tensor:
        state, f, k = _coefficients(self.process, expand_t(t.float(), c.shape[0], c.device))
        basis = self.process.basis
        c0_hat = basis(self.denoiser(basis.inverse(c), state, self.cond).to(c.dtype))
        self.nfe += 1
        return f * c + k * (c - state.alpha * c0_hat)

    def __call__(self, t: Tensor, y: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            c = y[0].detach().requires_grad_(True)
            v = self.velocity(t, c)
            if self.probe is not None:  # Hutchinson: εᵀ (∂v/∂c) ε
                (grad,) = torch.autograd.grad(v, c, self.probe)
                div = (grad * self.probe).flatten(1).sum(1)
            else:  # exact trace: one backward pass per dimension
                v_flat, div = v.flatten(1), torch.zeros_like(v.flatten(1)[:, 0])
                for i in range(v_flat.shape[1]):
                    (grad,) = torch.autograd.grad(v_flat[:, i].sum(), c, retain_graph=True)
                    div = div + grad.flatten(1)[:, i]
        return v.detach(), div.detach()


def _rademacher(shape, generator, device, dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    bits = torch.randint(0, 2, shape, generator=generator, device=gen_device)
    return (2 * bits - 1).to(device=device, dtype=dtype)


def bits_per_dim(
    denoiser,
    process,
    x0: Tensor,
    *,
    cond: Tensor | None = None,
    dequantize: bool = True,
    num_bins: int = 256,
    hutchinson: bool = True,
    t_min: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    prior: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Likelihood:
    """Bits/dim of x0 (B, *data_shape) in [−1, 1] under the PF-ODE model of `denoiser`.

    dequantize: x0 holds num_bins-level data (2k/(num_bins − 1) − 1); add uniform noise and
        the log₂(num_bins/2) offset (7 bits for 8-bit data). False: x0 is continuous data and the
        result is −log p(x0)/(D ln 2) of its density, no offset.
    hutchinson: one Rademacher probe per sample (drawn once from `generator`, after the
        dequantisation noise); False: exact divergence, D backward passes per evaluation.
    t_min: where the ODE starts (None: `default_t_min`); rtol, atol, method: torchdiffeq.odeint's.
    prior: log p_1(x1) -> (B,) to use instead of `process.prior_log_prob`.
    """
    if not (process.linear and process.full_rank_noise):
        raise ValueError(
            "the PF-ODE likelihood needs a linear degradation with full-rank noise (σ_i(t) > 0 "
            f"for t > 0); {type(process.degradation).__name__} is not"
        )
    dims = math.prod(x0.shape[1:])
    dtype = torch.float32 if x0.device.type == "mps" else torch.float64  # MPS has no float64
    x = uniform_dequantize(x0, num_bins, generator) if dequantize else x0.double()
    x = x.to(dtype)
    t_min = default_t_min(process, device=x.device) if t_min is None else float(t_min)
    probe = _rademacher(x.shape, generator, x.device, dtype) if hutchinson else None
    flow = _FlowWithDivergence(denoiser, process, cond, probe)

    with torch.no_grad():
        alpha_min = process.state(expand_t(t_min, x.shape[0], x.device)).alpha.to(dtype)
        c_start = alpha_min * process.basis(x)
        log_det = torch.log(alpha_min).expand_as(c_start).flatten(1).sum(1)  # x̂ = c/α
        times = torch.tensor([t_min, 1.0], dtype=dtype, device=x.device)
        zeros = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
        options = {"step_t": times[1:]} if method in _ADAPTIVE_RK else None  # never step past 1
        c, delta = torchdiffeq.odeint(
            flow, (c_start, zeros), times, rtol=rtol, atol=atol, method=method, options=options
        )
        x1 = process.basis.inverse(c[-1])
        log_p1 = prior(x1) if prior is not None else process.prior_log_prob(x1)
        log_prob = log_p1.to(dtype) + delta[-1] + log_det
    bpd = -log_prob / (dims * math.log(2))
    if dequantize:
        bpd = bpd + math.log2(num_bins / 2)
    return Likelihood(bpd, log_prob, log_p1, flow.nfe, t_min, rtol, atol, method)
