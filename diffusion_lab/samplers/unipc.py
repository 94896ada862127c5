"""UniPC (Zhao et al. 2023): the multistep predictor UniP-p and the corrector UniC-p, in data
prediction with B(h) = e^h − 1 ("bh2"), per component in the basis.

Per component, λ = log(α/σ), the step s → t has h = λ_t − λ_s and the previous estimates ĉ0_k at
λ_k give r_k = (λ_k − λ_s)/h and D_k = (ĉ0_k − ĉ0_s)/r_k. With hh = −h (data prediction),

    x̄ = (σ_t/σ_s) c_s + α_t (1 − e^{−h}) ĉ0_s
    UniP-p:  c_t = x̄ − α_t B(hh) Σ_{k<p} a_k D_k,               R_{p−1} a = g_{p−1}  (eq. 8)
    UniC-p:  c_t = x̄ − α_t B(hh) (Σ_{k<p} a^c_k D_k + a^c_p (ĉ0_t − ĉ0_s)),  R_p a^c = g_p,

where R_p[i, k] = r_k^i (i = 0..p−1, r_p = 1), g_i = i! φ_{i+1}(hh)/B(hh) with hφ_1 = e^{hh} − 1,
φ_{i+1} = φ_i/hh − 1/(i+1)! — Zhao et al.'s Alg. 2 and Thm. 3.1 (for p = 2 the predictor uses a
= ½, as the authors do). The corrector reuses ĉ0_t, the model output at the predicted c_t, which
the next step needs anyway: UniC raises the order by one for no extra evaluation (NFE =
num_steps). The last step (to σ = 0) is first order, as `lower_order_final` does in the
reference implementation, and is not corrected (nothing evaluates its output).
"""

import torch
from torch import Tensor

from diffusion_lab.samplers.common import Loop, divide


def _log_alpha_sigma(state) -> Tensor:
    """λ = log α − log σ per component (±inf at α = 0 or σ = 0; callers mask those)."""
    return torch.log(state.alpha) - torch.log(state.sigma)


def _coefficients(h: Tensor, rks: list[Tensor], corrector: bool) -> Tensor:
    """Solve for the weights a (…, p) per component; rks are the r_k of the history."""
    hh = -h.double()
    b_h = torch.expm1(hh)  # B(hh), bh2
    h_phi = torch.expm1(hh) / hh - 1  # φ_2 scaled, as in Alg. 2
    rows, g, factorial = [], [], 1
    nodes = [r.double() for r in rks] + ([torch.ones_like(hh)] if corrector else [])
    p = len(nodes)
    for i in range(1, p + 1):
        rows.append(torch.stack([r ** (i - 1) for r in nodes], -1))
        g.append(h_phi * factorial / b_h)
        factorial *= i + 1
        h_phi = h_phi / hh - 1 / factorial
    if p == 1:  # UniP-2's and UniC-1's a = ½ (Zhao et al., the authors' simplified choice)
        return torch.full((*h.shape, 1), 0.5, dtype=torch.float64)
    big_r, rhs = torch.stack(rows, -2), torch.stack(g, -1)
    return torch.linalg.solve(big_r, rhs)


def _step(c_s, st, ss, c0_s, history, c0_t=None):
    """One UniP (c0_t None) or UniC update from (c_s, ĉ0_s) at s to t; history [(ĉ0_k, λ_k)],
    newest first. Per component, where a step length is 0 or infinite (a component that was pure
    noise, α = 0, or is clean) the update falls back to first order."""
    lam_s, lam_t = _log_alpha_sigma(st), _log_alpha_sigma(ss)
    h = lam_t - lam_s
    first = torch.isfinite(h) & (h > 0)
    h_safe = torch.where(first, h, 1.0)
    rks = [(lam_k - lam_s) / h_safe for _, lam_k in history]
    ok = first
    for r in rks:
        ok = ok & torch.isfinite(r) & (r < 0)
    rks = [torch.where(ok, r, -(k + 1.0)) for k, r in enumerate(rks)]  # distinct: R invertible
    x_bar = divide(ss.sigma, st.sigma) * c_s - ss.alpha * torch.expm1(-h_safe) * c0_s
    keep = divide(ss.sigma, st.sigma) * c_s  # h = 0: pure noise at both times only rescales
    if not history and c0_t is None:
        return torch.where(first, x_bar, keep)
    a = _coefficients(h_safe, rks, corrector=c0_t is not None).to(c_s.dtype)
    res = sum(a[..., k] * (c0_k - c0_s) / r for k, ((c0_k, _), r) in enumerate(zip(history, rks)))
    if c0_t is not None:
        res = res + a[..., -1] * (c0_t - c0_s)
    c_t = x_bar - ss.alpha * torch.expm1(-h_safe) * res
    return torch.where(ok, c_t, torch.where(first, x_bar, keep))


def unipc(denoiser, process, x, *, num_steps, grid, order=2, corrector=True, **call):
    """UniPC-p with `order` p ∈ {1, 2, 3} (predictor order; the corrector adds one), `corrector`
    False for UniP alone. `call`: cond, generator, callback, progress (samplers/common.Loop)."""
    if order not in (1, 2, 3):
        raise ValueError(f"sampler.order must be 1, 2 or 3, got {order}")
    loop = Loop(denoiser, process, num_steps, grid, "unipc", **call)
    basis = process.basis
    history = []  # (ĉ0_k, λ_k) of earlier points, newest last
    prev = None  # (c_s, state_s, ĉ0_s, history at s, p) of the last predictor step
    for i, t, t_next in loop.steps(x):
        st, ss = loop.state(t, x), loop.target(t_next, x)
        x0 = loop.denoise(x, st)
        c_t, c0 = basis(x), basis(x0)
        if prev is not None and corrector:  # UniC: correct the point just evaluated
            c_s, s_state, c0_s, hist_s = prev
            corrected = _step(c_s, s_state, st, c0_s, hist_s, c0_t=c0)
            c_t = torch.where(st.sigma > 0, corrected, c_t)
        final = float(t_next) == 0
        p = 1 if final else min(order, len(history) + 1)
        hist = history[len(history) - (p - 1) :] if p > 1 else []
        hist = list(reversed(hist))  # newest first: r_1 = (λ_{−1} − λ_s)/h, ...
        c = _step(c_t, st, ss, c0, hist)
        c = torch.where(ss.sigma > 0, c, ss.alpha * c0)  # σ = 0: the denoised estimate
        prev = (c_t, st, c0, hist)
        history = (history + [(c0, _log_alpha_sigma(st))])[-2:]
        x = basis.inverse(torch.where(st.sigma > 0, c, c_t))
        loop.report(x, i, t, x0)
    return x


unipc.requires = ("linear",)
