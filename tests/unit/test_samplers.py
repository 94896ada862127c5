"""Samplers against exact denoisers: they must reproduce the data distribution, no training needed.

Data: a Gaussian N(0.2, 0.4²) in 4-D and a two-mode mixture (weights 0.3/0.7, means ±0.6, std 0.15).
Tolerances, n = 4000 samples × 4 components: the standard error of the std is ≈ 0.6% and of the
mean ≈ 0.003; the mixture weight's is √(0.21/4000) ≈ 0.007. With the step counts below the
discretisation bias is ≤ 1.5% (measured by refining the grid), so we allow 4% on the std, 0.02 on
the mean and 0.035 on the weight: above 4 standard errors plus bias, far below a broken sampler.
"""

from functools import partial

import pytest
import torch

from diffusion_lab.degradations import VarianceExploding, VariancePreserving
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers import ancestral, ddim, grids, pf_ode
from diffusion_lab.schedules import Cosine, EDMSchedule, LinearBeta
from tests.oracles import gaussian, two_modes

N = 4000
PROCESSES = {
    "vp_cosine": ForwardProcess(VariancePreserving(), Cosine(), (4,)),
    "ve_edm": ForwardProcess(VarianceExploding(), EDMSchedule(), (4,)),
}
SAMPLERS = {
    "ancestral": partial(ancestral.ancestral, num_steps=500, grid=grids.uniform),
    "ddim": partial(ddim.ddim, num_steps=128, grid=grids.uniform),
    "ddim_eta1": partial(ddim.ddim, num_steps=500, grid=grids.uniform, eta=1.0),
    "euler": partial(pf_ode.euler, num_steps=128, grid=grids.karras),
    "heun": partial(pf_ode.heun, num_steps=48, grid=grids.karras),
    "heun_churn": partial(
        pf_ode.heun, num_steps=128, grid=grids.karras, s_churn=20, s_tmin=0.05, s_tmax=50
    ),
    "heun_log_snr": partial(pf_ode.heun, num_steps=64, grid=grids.log_snr),
}


def _draw(sampler, process, data, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return sampler(data, process, process.prior(N, generator=gen).to(dtype), generator=gen)


@pytest.mark.parametrize("process", PROCESSES.values(), ids=PROCESSES.keys())
@pytest.mark.parametrize("sampler", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_gaussian_data_is_reproduced(sampler, process):
    x = _draw(sampler, process, gaussian(0.2, 0.4))
    assert x.mean().item() == pytest.approx(0.2, abs=0.02)
    assert x.std().item() == pytest.approx(0.4, rel=0.04)


@pytest.mark.parametrize("process", PROCESSES.values(), ids=PROCESSES.keys())
@pytest.mark.parametrize("sampler", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_mixture_weights_and_modes_are_reproduced(sampler, process):
    data = two_modes((4,))
    x = _draw(sampler, process, data)
    k = data.classify(x)
    assert (k == 0).float().mean().item() == pytest.approx(0.3, abs=0.035)
    assert (x - data.means[k].float()).std().item() == pytest.approx(0.15, rel=0.06)


def test_heun_converges_faster_than_euler():
    """For Gaussian data the PF-ODE solution is closed-form: x0 = μ + (x_T − μ) s / √(s² + σ_max²).
    Euler's error halves when N doubles (order 1), Heun's quarters (order 2)."""
    process, data = PROCESSES["ve_edm"], gaussian(0.2, 0.4)
    x_T = process.prior(N, generator=torch.Generator().manual_seed(0))
    exact = 0.2 + (x_T - 0.2) * 0.4 / (0.4**2 + 80.0**2) ** 0.5

    def error(solver, n):
        return (
            (solver(data, process, x_T, num_steps=n, grid=grids.karras) - exact).abs().max().item()
        )

    euler = [error(pf_ode.euler, n) for n in (32, 64, 128)]
    heun = [error(pf_ode.heun, n) for n in (32, 64, 128)]
    assert all(1.7 < a / b < 2.3 for a, b in zip(euler, euler[1:]))
    assert all(a / b > 3.5 for a, b in zip(heun, heun[1:]))
    assert heun[0] < euler[-1]  # 63 NFE of Heun beat 128 of Euler


def test_ancestral_is_ddim_with_eta_one():
    """The same noise draws, the same update written two ways. Compared in float64: the exact
    denoiser amplifies a rounding difference ~1000× over the last steps near the mode boundary
    (6e-4 in float32, ~3e-14 in float64); a wrong coefficient moves samples by O(0.1-1)."""
    process, data = PROCESSES["vp_cosine"], two_modes((4,), out_dtype=torch.float64)
    run = partial(_draw, process=process, data=data, dtype=torch.float64)
    a = run(partial(ancestral.ancestral, num_steps=20, grid=grids.uniform))
    b = run(partial(ddim.ddim, num_steps=20, grid=grids.uniform, eta=1.0))
    assert a.dtype == b.dtype == torch.float64
    assert (a - b).abs().max().item() < 1e-8  # float64 comparison


def test_deterministic_ddim_is_euler_in_noise_to_signal_ratio():
    # compared in float64 (float32 rounding, amplified by the sampler, reaches 1.4e-5 here)
    process, data = PROCESSES["vp_cosine"], two_modes((4,), out_dtype=torch.float64)
    run = partial(_draw, process=process, data=data, dtype=torch.float64)
    a = run(partial(ddim.ddim, num_steps=10, grid=grids.karras))
    b = run(partial(pf_ode.euler, num_steps=10, grid=grids.karras))
    assert a.dtype == b.dtype == torch.float64
    assert torch.allclose(a, b, rtol=0, atol=1e-8)


def test_uniform_grid_is_the_ddpm_grid():
    process = ForwardProcess(VariancePreserving(), LinearBeta(), (1,))
    ref = torch.arange(1000, -1, -1, dtype=torch.float64) / 1000  # closed form in float64
    # derived: the float32 grid is i/1000 rounded once, |error| <= 2^-24 |t| (rtol 2^-23: 2×)
    assert torch.allclose(grids.uniform(process, 1000).double(), ref, rtol=2**-23, atol=0)


def test_karras_grid_matches_edm_eq5():
    process = PROCESSES["ve_edm"]
    t = grids.karras(process, 18, rho=7.0, sigma_min=0.002, sigma_max=80.0)
    sigma = process.state(t).sigma.flatten()
    i = torch.arange(18, dtype=torch.float64)  # the closed form in float64
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    # float32 σ through t(λ) and back: a few eps × ρ = 7 ≈ 1e-6 relative; 1e-4 leaves room
    assert torch.allclose(sigma[:-1].double(), ref, rtol=1e-4, atol=0) and sigma[-1] == 0


def test_callback_and_nfe():
    process, data = PROCESSES["ve_edm"], gaussian(0.0, 0.5)
    seen, calls = [], []

    def counted(x, state, cond=None):
        calls.append(1)
        return data(x, state)

    x_T = process.prior(8)
    pf_ode.heun(counted, process, x_T, num_steps=5, grid=grids.karras, callback=seen.append)
    assert len(calls) == 2 * 5 - 1
    assert [s["i"] for s in seen] == list(range(5))
    assert set(seen[0]) == {"x", "i", "t", "denoised"}


def test_invalid_num_steps():
    with pytest.raises(ValueError, match="num_steps"):
        ddim.ddim(
            gaussian(0, 1), PROCESSES["ve_edm"], torch.zeros(2, 4), num_steps=0, grid=grids.uniform
        )
