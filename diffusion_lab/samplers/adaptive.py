"""Adaptive step size: the user gives a tolerance, not a step count (Lu et al. 2022a, DPM-Solver
§3.4 / Alg. 4 "DPM-Solver-12", in the data-prediction form of DPM-Solver++, Lu et al. 2022b).

Steps are taken in λ = log(α/σ) from λ(1) to λ_end = min(logsnr_max, λ(0)). From x_t at λ_t,
with h the proposed step, s at λ_t + h and m at λ_t + h/2:

    x_low  = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) D(x_t, t)                 first order (DDIM)
    x_m    = (σ_m/σ_t) x_t + α_m (1 − e^{−h/2}) D(x_t, t)
    x_high = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) D(x_m, m)                   DPM-Solver++(2S), r = ½

    E = max over samples of ‖(x_high − x_low) / δ‖₂ / √d,   δ = max(atol, rtol · max(|x_low|, |x_prev|))

The step is accepted when E ≤ 1 (x ← x_high), and the next h is θ h E^{−1/2} (θ = 0.9; the
first-order local error is O(h²)). D(x_t, t) is evaluated once per accepted point, so an accepted
step costs 2 calls and a rejected one 1. At λ_end the last call denoises to clean data. One step
size for the whole batch, so the NFE is per batch, as for the fixed-grid samplers; it is reported
by sampling.generate. Isotropic log-SNR processes (one λ per sample).
"""

import torch
from tqdm.auto import tqdm

from diffusion_lab.process import expand_t
from diffusion_lab.samplers.common import Loop
from diffusion_lab.samplers.grids import logsnr_range


def adaptive(
    denoiser,
    process,
    x,
    *,
    rtol=0.05,
    atol=0.0078,
    h_init=0.5,
    logsnr_max=12.4,
    max_calls=2000,
    **call,
):
    """`rtol`, `atol`: the tolerances of E (atol ≈ 1/128, a 1-bit change of [−1, 1] 8-bit data);
    `h_init`: the first proposed step in λ; `logsnr_max`: where the solve ends before the final
    denoise (as grids.log_snr); `max_calls` bounds the work (an error if exceeded).
    `call`: cond, generator, callback, progress (samplers/common.Loop)."""
    if not (rtol > 0 and atol > 0 and h_init > 0):
        raise ValueError(
            f"sampler=adaptive needs rtol, atol, h_init > 0; got {rtol}, {atol}, {h_init}"
        )
    loop = Loop(denoiser, process, 0, None, "adaptive", **call)
    batch, device = x.shape[0], x.device
    lam_1, lam_0 = logsnr_range(process)
    lam, lam_end = lam_1 / 2, min(logsnr_max, lam_0) / 2  # λ = log(α/σ) = log-SNR / 2

    def state(lam_: float):
        t = process.t_from_logsnr(torch.tensor([2 * lam_], dtype=torch.float64)).clamp(0, 1)
        return loop.state(expand_t(float(t), batch, device).to(torch.float32), x)

    def step(x_t, st, ss, x0):  # first-order DPM-Solver++ from st to ss
        exp_neg_h = (st.alpha * ss.sigma) / (st.sigma * ss.alpha)
        return (ss.sigma / st.sigma) * x_t + ss.alpha * (1 - exp_neg_h) * x0

    h, x_prev, calls, i = h_init, x, 0, 0
    st = state(lam)
    x0 = None
    bar = tqdm(
        total=lam_end - lam,
        disable=not loop.progress,
        leave=False,
        desc="adaptive",
        bar_format="{l_bar}{bar}| λ {n:.2f}/{total:.2f} [{elapsed}]",
    )
    while lam_end - lam > 1e-9:
        h = min(h, lam_end - lam)
        if x0 is None:
            x0, calls = loop.denoise(x, st), calls + 1
        sm, ss = state(lam + h / 2), state(lam + h)
        x_low = step(x, st, ss, x0)
        x_mid = step(x, st, sm, x0)
        x_high = step(x, st, ss, loop.denoise(x_mid, sm))
        calls += 1
        delta = torch.maximum(
            torch.full_like(x_low, atol), rtol * torch.maximum(x_low.abs(), x_prev.abs())
        )
        error = float(((x_high - x_low) / delta).flatten(1).pow(2).mean(1).sqrt().max())
        if error <= 1:
            x_prev, x, lam, st, x0 = x, x_high, lam + h, ss, None
            bar.update(h)
            loop.report(x, i, st.t[0], x_high)
            i += 1
        h = 0.9 * h * max(error, 1e-8) ** -0.5
        if calls > max_calls:
            raise RuntimeError(
                f"sampler=adaptive used more than max_calls={max_calls} calls (step {h:.2e} in "
                f"λ at λ = {lam:.2f}); raise sampler.rtol/atol or sampler.max_calls"
            )
    bar.close()
    x0 = loop.denoise(x, st)  # the last point: denoise to clean data
    loop.report(x0, i, st.t[0], x0)
    return x0


adaptive.requires = ("linear", "isotropic")
adaptive.needs_logsnr = True
