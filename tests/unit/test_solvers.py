"""Multistep solvers (DPM-Solver++, UniPC), the adaptive sampler and the grid fixes of issue 16.

Closed forms: for Gaussian data x0 ~ N(μ, s²) the probability-flow ODE is solvable, in the scaled
variables x̃ = x/α, σ̃ = σ/α:  x̃(σ̃) = μ + (x̃_T − μ) √(s² + σ̃²)/√(s² + σ̃_T²), and the grid's last
step (to clean data) is the posterior mean at σ̃_end, E = μ + s²/(s² + σ̃_end²)(x̃ − μ). So every
ODE solver's error is measured exactly, in float64, and its order read off as log₂ of the error
ratio when the step count doubles.
"""

import math
from functools import partial

import pytest
import torch

from diffusion_lab.degradations import VariancePreserving
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers import adaptive, ancestral, ddim, dpmpp, grids, pf_ode, sde, unipc
from diffusion_lab.schedules import Cosine
from tests.oracles import gaussian, two_modes

MU, S = 0.2, 0.4
LOGSNR_END = 12.4  # grids.log_snr's default end


def _vp(**schedule):
    return ForwardProcess(VariancePreserving(), Cosine(**schedule), (4,)).setup(None)


def _prior(process, n=64, seed=0, dtype=torch.float64):
    return process.prior(n, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _exact(process, x_T):
    top = process.state(torch.ones(1, dtype=torch.float64))
    r_T = float(top.sigma / top.alpha)
    r_end = math.exp(-LOGSNR_END / 2)
    x_end = MU + (x_T / float(top.alpha) - MU) * math.sqrt(S**2 + r_end**2) / math.sqrt(
        S**2 + r_T**2
    )
    return MU + S**2 / (S**2 + r_end**2) * (x_end - MU)


def _orders(solver, counts=(16, 32, 64)):
    process, data = _vp(), gaussian(MU, S, (4,), out_dtype=torch.float64)
    x_T = _prior(process)
    exact = _exact(process, x_T)
    errors = [
        (solver(data, process, x_T, num_steps=n, grid=grids.log_snr) - exact).abs().max().item()
        for n in counts
    ]
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


@pytest.mark.parametrize(
    "name, solver, order",
    [
        ("ddim", ddim.ddim, 1),
        ("dpm-solver++ 2M", dpmpp.dpmpp, 2),
        ("dpm-solver++ 3M", partial(dpmpp.dpmpp, order=3), 2),  # first steps lower order: 2
        ("unipc-1 (UniC raises 1 → 2)", partial(unipc.unipc, order=1), 2),
        ("unipc-2 (UniC raises 2 → 3)", unipc.unipc, 3),
        ("heun", pf_ode.heun, 2),
    ],
)
def test_ode_solvers_converge_at_their_order(name, solver, order):
    """Measured (float64, log_snr grid, N = 16 → 32 → 64): ddim 0.98, 0.99; 2M 1.81, 1.99; 3M
    2.73, 2.33 (its first two steps are order 1 and 2, so its global order is 2); UniPC-1 1.94,
    2.01; UniPC-2 2.76, 3.00; Heun 2.25, 2.12. The last ratio must be within 0.35 of the order."""
    assert _orders(solver)[-1] > order - 0.35, name


def test_first_order_dpm_solver_is_ddim():
    process, data = _vp(), two_modes((4,), out_dtype=torch.float64)
    x_T = _prior(process)
    a = dpmpp.dpmpp(data, process, x_T, num_steps=12, grid=grids.log_snr, order=1)
    b = ddim.ddim(data, process, x_T, num_steps=12, grid=grids.log_snr)
    assert (a - b).abs().max().item() < 1e-10  # the same update written two ways, float64


def test_unip_2_without_corrector_is_dpm_solver_2m():
    """UniP-2 with a = ½ is DPM-Solver++(2M) (Zhao et al. 2023, §3.2): the same numbers."""
    process, data = _vp(), two_modes((4,), out_dtype=torch.float64)
    x_T = _prior(process)
    a = unipc.unipc(data, process, x_T, num_steps=12, grid=grids.log_snr, corrector=False)
    b = dpmpp.dpmpp(data, process, x_T, num_steps=12, grid=grids.log_snr)
    assert (a - b).abs().max().item() < 1e-10


def test_sde_solver_with_eta_one_at_order_one_is_ancestral_in_distribution():
    """First-order SDE-DPM-Solver++ with η = 1 and DDPM's ancestral step draw from the same
    Gaussian transition: x_s | x_t has mean (σ_s/σ_t)e^{−h} x_t + α_s(1 − e^{−2h}) x̂0 and
    variance σ_s²(1 − e^{−2h}) — identical to the posterior q(x_s | x_t, x̂0). Same noise ⇒ same
    samples."""
    process, data = _vp(), two_modes((4,), out_dtype=torch.float64)
    run = partial(data.__call__)
    outs = []
    for fn in (
        partial(dpmpp.dpmpp, order=1, eta=1.0),
        ancestral.ancestral,
    ):
        gen = torch.Generator().manual_seed(5)
        x_T = process.prior(256, generator=gen).double()
        outs.append(fn(run, process, x_T, num_steps=15, grid=grids.uniform, generator=gen))
    assert (outs[0] - outs[1]).abs().max().item() < 1e-8


def _mixture_check(x, data):
    k = data.classify(x)
    assert (k == 0).float().mean().item() == pytest.approx(0.3, abs=0.035)
    assert (x - data.means[k].float()).std().item() == pytest.approx(0.15, rel=0.06)


@pytest.mark.parametrize(
    "sampler",
    [
        partial(dpmpp.dpmpp, num_steps=25, grid=grids.log_snr),
        partial(dpmpp.dpmpp, num_steps=25, grid=grids.log_snr, order=3),
        partial(dpmpp.dpmpp, num_steps=40, grid=grids.uniform, eta=1.0),
        partial(dpmpp.dpmpp, num_steps=40, grid=grids.log_snr, order=3, eta=1.0),
        partial(unipc.unipc, num_steps=25, grid=grids.log_snr),
        partial(unipc.unipc, num_steps=25, grid=grids.karras, order=3),
        partial(adaptive.adaptive, rtol=0.01, atol=0.002),
    ],
    ids=["2m", "3m", "2m_sde", "3m_sde", "unipc_2", "unipc_3_karras", "adaptive"],
)
def test_mixture_weights_and_modes_are_reproduced(sampler):
    """The tolerances of tests/unit/test_samplers.py (4000 samples, 4-D two-mode mixture)."""
    process, data = _vp(), two_modes((4,))
    gen = torch.Generator().manual_seed(1)
    _mixture_check(sampler(data, process, process.prior(4000, generator=gen), generator=gen), data)


def _count(data):
    calls = []

    def counted(x, state, cond=None):
        calls.append(1)
        return data(x, state)

    return counted, calls


def test_adaptive_meets_its_tolerance_and_spends_calls_by_it():
    process, data = _vp(), gaussian(MU, S, (4,), out_dtype=torch.float64)
    x_T = _prior(process)
    exact = _exact(process, x_T)
    results = []
    for rtol in (0.1, 0.01, 0.001):
        counted, calls = _count(data)
        x = adaptive.adaptive(counted, process, x_T, rtol=rtol, atol=rtol / 10)
        results.append((len(calls), (x - exact).abs().max().item()))
    nfe, err = zip(*results)
    assert nfe[0] < nfe[1] < nfe[2]  # tighter tolerance, more calls
    assert err[0] > err[1] > err[2]  # ... and a smaller error
    assert err[1] < 0.02 and err[2] < 0.002  # measured 0.0123 and ...: the global error tracks rtol


def test_adaptive_gives_up_with_one_line():
    process, data = _vp(), gaussian(MU, S, (4,))
    with pytest.raises(RuntimeError, match="max_calls=5"):
        adaptive.adaptive(data, process, _prior(process, dtype=torch.float32), max_calls=5)


# -- grids and the final step --------------------------------------------------------------------
TRUNCATED = {"logsnr_max": 8.77}  # Nichol & Dhariwal's s = 0.008: σ(0) > 0


@pytest.mark.parametrize("grid", [grids.karras, grids.log_snr])
def test_grids_of_a_truncated_schedule_have_no_zero_length_steps(grid):
    t = grid(_vp(**TRUNCATED), 10)
    assert len(t) == 11 and bool(
        (t[:-1] > t[1:]).all() or (t[-2] == 0 and (t[:-2] > t[1:-1]).all())
    )
    assert int((t == 0).sum()) <= 2  # at most the schedule's own t = 0 and the clean end point


@pytest.mark.parametrize(
    "sampler",
    [ddim.ddim, ancestral.ancestral, pf_ode.heun, pf_ode.euler, dpmpp.dpmpp, unipc.unipc, sde.sde],
)
def test_the_last_step_is_a_full_denoise_on_a_truncated_schedule(sampler):
    """σ(0) > 0: before the fix, ddim/ancestral/heun returned x at σ(0) = 0.012 (noise left in),
    after two zero-length steps on the karras grid. Now the output is the last denoised estimate."""
    process, data = _vp(**TRUNCATED), two_modes((4,), out_dtype=torch.float64)
    seen = []
    x_T = _prior(process)
    x = sampler(data, process, x_T, num_steps=8, grid=grids.karras, callback=seen.append)
    # the same number up to the last update's rounding (ancestral forms it as σ_t² x̂0 / σ_t²)
    assert torch.allclose(x, seen[-1]["denoised"], rtol=1e-12, atol=1e-12)


def test_churn_never_tells_the_network_less_noise_than_it_sees():
    """Heun with churn at σ̃ = σ̃(1) ≈ 148: σ̃̂ = σ̃(1 + γ) would be 209, beyond the schedule, and
    t̂ was clamped to 1 (the network was told 148 and saw 209). Now σ̃̂ is capped at σ̃(1): the
    x̃ the network first sees has variance s² + σ̃(1)², as it is told."""
    process, data = _vp(), gaussian(0.0, S, (4,), out_dtype=torch.float64)
    told, seen = [], []

    def recording(x, state, cond=None):
        told.append(float((state.sigma / state.alpha).flatten()[0]))
        seen.append((x / state.alpha).std().item())
        return data(x, state)

    x_T = _prior(process, n=4000)
    pf_ode.heun(recording, process, x_T, num_steps=10, grid=grids.karras, s_churn=80)
    expected = math.sqrt(S**2 + told[0] ** 2)
    assert seen[0] == pytest.approx(expected, rel=0.03)  # 16000 draws: std's s.e. ≈ 0.6%
