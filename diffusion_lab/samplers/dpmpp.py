"""DPM-Solver++ multistep, ODE and SDE (Lu et al. 2022b "DPM-Solver++", Alg. 2 and §5), per
component in the basis.

Per component, with λ = log(α/σ) and the step t → s of length h = λ_s − λ_t, the exact solution
of the probability-flow ODE in data prediction is (Lu et al. 2022b, eq. 8)

    c_s = (σ_s/σ_t) c_t + α_s ∫_{λ_t}^{λ_s} e^{λ−λ_s} ĉ0(λ) dλ,

and its SDE counterpart with noise η ∈ [0, 1] (η = 1: the reverse SDE, Lu et al. 2022b §5;
k-diffusion's `eta`), with h_η = (1 + η) h,

    c_s = (σ_s/σ_t) e^{−ηh} c_t + α_s (1 − e^{−h_η}) ĉ0 + σ_s √(1 − e^{−2ηh}) z   (first order).

Higher orders extrapolate ĉ0 in λ from the previous steps' estimates (no extra calls; NFE =
num_steps). With r_k = h_{−k}/h the ratios of the previous step lengths to this one:

    order 2 (Alg. 2, "2M")  + α_s (1 − e^{−h_η}) (ĉ0 − ĉ0_{−1}) / (2 r_1)
    order 3 ("3M")          + α_s (φ_2 d_1 − φ_3 d_2),   φ_2 = 1 − (1 − e^{−h_η})/h_η,
                            φ_3 = φ_2/h_η − ½, d_1, d_2 the first and second divided differences
                            of ĉ0 in λ scaled by h (k-diffusion's `sample_dpmpp_3m_sde`).

The first steps use the orders their history allows, and the last step (to σ = 0, h = ∞) is
first order: it returns α_0 ĉ0. With η = 0, order 1 is DDIM (tests). e^{−h} is formed as the
ratio (σ_s α_t)/(σ_t α_s), so components with α = 0 (pure noise) or σ = 0 (clean) need no
infinities: a clean component is kept, one still pure noise at s only rescales.
"""

import torch
from torch import Tensor

from diffusion_lab.samplers.common import Loop, divide


def _ratio(st, ss) -> Tensor:
    """e^{−h} = (σ_s α_t)/(σ_t α_s) ∈ [0, 1]; 1 (h = 0) where α_s = 0 (still pure noise)."""
    num, den = ss.sigma * st.alpha, st.sigma * ss.alpha
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 1.0).clamp(0, 1)


RATIO_MAX = 10.0  # a previous step more than 10× longer or shorter than this one is not used


def _usable(h: Tensor, h_prev: Tensor) -> Tensor:
    """Where a previous step of length h_prev can extrapolate ĉ0 over this one (h): both finite
    and positive, ratio within [1/RATIO_MAX, RATIO_MAX]. Variable-step multistep formulas amplify
    the difference of two estimates by h/h_prev; with the SDE's fresh noise in that difference a
    component whose clock barely moved last step (GUD's sequential orders) would blow up."""
    ok = torch.isfinite(h) & (h > 0) & torch.isfinite(h_prev) & (h_prev > 0)
    ratio = torch.where(ok, h_prev / torch.where(ok, h, 1.0), 1.0)
    return ok & (ratio >= 1 / RATIO_MAX) & (ratio <= RATIO_MAX)


def _correction(order: int, h: Tensor, h_eta: Tensor, c0: Tensor, history) -> Tensor:
    """The order-2 or order-3 term multiplying α_s. Per component it falls back to a lower order
    where a step length is 0 or infinite (a component that was pure noise, α = 0, or clean)."""
    one_minus = -torch.expm1(-h_eta)
    (c1, h1) = history[-1]
    ok2 = _usable(h, h1)
    h, h1 = torch.where(ok2, h, 1.0), torch.where(ok2, h1, 1.0)
    second = one_minus * (c0 - c1) * h / (2 * h1)
    if order == 2:
        return torch.where(ok2, second, 0.0)
    (c2, h2) = history[-2]
    ok3 = ok2 & _usable(h, h2)
    h2 = torch.where(ok3, h2, 1.0)
    h_eta = torch.where(ok2, h_eta, 1.0)
    d1_0 = (c0 - c1) * h / h1  # (ĉ0 − ĉ0_{−1}) / r0
    d1_1 = (c1 - c2) * h / h2  # (ĉ0_{−1} − ĉ0_{−2}) / r1
    r0, r1 = h1 / h, h2 / h
    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi2 = 1 - one_minus / h_eta
    phi3 = phi2 / h_eta - 0.5
    return torch.where(ok3, phi2 * d1 - phi3 * d2, torch.where(ok2, second, 0.0))


def dpmpp(denoiser, process, x, *, num_steps, grid, order=2, eta=0.0, s_noise=1.0, **call):
    """`order` 1-3 (2: DPM-Solver++(2M), the paper's recommendation for guided sampling), `eta` 0
    for the ODE, 1 for the SDE solver (2M SDE / 3M SDE); `s_noise` scales the SDE's fresh noise.
    `call`: cond, generator, callback, progress (samplers/common.Loop)."""
    if order not in (1, 2, 3):
        raise ValueError(f"sampler.order must be 1, 2 or 3, got {order}")
    if not 0 <= eta <= 1:
        raise ValueError(f"sampler.eta must lie in [0, 1], got {eta}")
    loop = Loop(denoiser, process, num_steps, grid, "dpm-solver++", **call)
    basis = process.basis
    history = []  # (ĉ0, h) of the previous steps
    for i, t, t_next in loop.steps(x):
        st, ss = loop.state(t, x), loop.target(t_next, x)
        x0 = loop.denoise(x, st)
        c0, c_t = basis(x0), basis(x)
        ratio = _ratio(st, ss)
        h = -torch.log(ratio)  # inf on the last step (σ_s = 0)
        h_eta = (1 + eta) * h
        c = divide(ss.sigma, st.sigma) * ratio**eta * c_t - ss.alpha * torch.expm1(-h_eta) * c0
        k = min(order, len(history) + 1)
        if k > 1 and float(t_next) > 0:
            c = c + ss.alpha * _correction(k, h, h_eta, c0, history)
        if eta > 0:
            std = ss.sigma * (-torch.expm1(-2 * eta * h)).clamp(min=0).sqrt()
            c = c + s_noise * std * loop.noise(c)
        c = torch.where(ss.sigma > 0, c, ss.alpha * c0)  # σ_s = 0: the denoised estimate
        x = basis.inverse(torch.where(st.sigma > 0, c, c_t))  # σ_t = 0: clean, kept
        history = (history + [(c0, h)])[-2:]
        loop.report(x, i, t, x0)
    return x


dpmpp.requires = ("linear",)
