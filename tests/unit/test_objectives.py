"""Objectives: equivalences between parameterisations, closed-form minimum, time densities."""

import math

import pytest
import torch

from diffusion_lab.degradations import VarianceExploding, VariancePreserving
from diffusion_lab.objectives import Denoising, Eps, V
from diffusion_lab.objectives import time as times
from diffusion_lab.objectives import weighting as weights
from diffusion_lab.process import ForwardProcess
from diffusion_lab.schedules import Cosine, EDMSchedule
from tests.numerics import EPS32
from tests.oracles import gaussian

PROCESSES = [
    ForwardProcess(VariancePreserving(), Cosine(), (4,)),
    ForwardProcess(VarianceExploding(), EDMSchedule(), (4,)),
]


class _SNR:
    def __call__(self, state):
        return state.snr


class _VWeight:
    def __call__(self, state):
        return (state.alpha**2 + state.sigma**2) ** 2 / state.sigma**2


def _noisy_denoiser(x, state, cond=None):
    return 0.7 * x + 0.1 * torch.sin(3 * x)


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("objective, equivalent", [(Eps, _SNR), (V, _VWeight)])
def test_eps_and_v_are_weighted_x0_mse(process, objective, equivalent):
    torch.manual_seed(0)
    x0, z, t = torch.randn(16, 4), torch.randn(16, 4), torch.rand(16) * 0.98 + 0.01
    uni = times.UniformTime()
    a = objective(uni)(_noisy_denoiser, process, x0, t=t, noise=z)
    b = Denoising(uni, equivalent())(_noisy_denoiser, process, x0, t=t, noise=z)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("process", PROCESSES)
def test_exact_denoiser_attains_posterior_variance(process):
    """For x0 ~ N(μ, s²), min E‖D − x0‖² per component = s²σ²/(α²s² + σ²)."""
    torch.manual_seed(0)
    data = gaussian(0.2, 0.4)
    x0, _ = data.sample(100_000)
    loss = Denoising(times.UniformTime(), weights.UniformWeighting())
    for t in (0.3, 0.6):
        tt = torch.full((x0.shape[0],), t)
        st = process.state(tt[:1])
        a, s = st.alpha.item(), st.sigma.item()
        expected = 0.16 * s**2 / (a**2 * 0.16 + s**2)
        assert loss(data, process, x0, t=tt).mean().item() == pytest.approx(expected, rel=0.02)
        assert loss(_noisy_denoiser, process, x0, t=tt).mean().item() > expected


def test_stratified_has_one_draw_per_stratum():
    t = times.Stratified(t_min=0.0)(64, None, "cpu")
    assert torch.equal(torch.sort((t * 64).floor()).values, torch.arange(64.0))


def test_uniform_range():
    t = times.UniformTime(t_min=0.1)(10_000, None, "cpu")
    assert t.min() >= 0.1 and t.max() <= 1.0 and t.mean().item() == pytest.approx(0.55, abs=0.01)


def test_log_normal_pushes_forward_to_log_sigma():
    torch.manual_seed(0)
    process = PROCESSES[1]  # VE: σ/α = σ
    t = times.LogNormal(p_mean=-1.2, p_std=1.2)(100_000, process, "cpu")
    log_sigma = torch.log(process.state(t).sigma.flatten())
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)


def test_weightings():
    process = PROCESSES[1]
    st = process.state(torch.tensor([0.3, 0.7]))
    s = st.sigma.double()  # the closed forms in float64
    rounding = dict(rtol=8 * EPS32, atol=0)  # derived: <= 8 float32 roundings of positive terms
    assert torch.allclose(
        weights.EDMWeighting(0.5)(st).double(), (s**2 + 0.25) / (s * 0.5) ** 2, **rounding
    )
    assert torch.allclose(
        weights.MinSNR(5.0)(st).double(), torch.clamp(1 / s**2, max=5.0), **rounding
    )
    assert math.isclose(weights.UniformWeighting()(st).sum().item(), 2.0)


def test_edm_weighting_stays_finite_where_sigma_underflows():
    """schedule=edm near t = 0: σ² underflows in float32; the loss must be 0, not inf·0 = NaN."""
    from diffusion_lab.bases.identity import Identity
    from diffusion_lab.degradations.gaussian import VarianceExploding, VariancePreserving
    from diffusion_lab.denoiser import Denoiser
    from diffusion_lab.objectives import weighting
    from diffusion_lab.objectives.denoising import Denoising
    from diffusion_lab.objectives.time import UniformTime
    from diffusion_lab.precond import EDMPrecond
    from diffusion_lab.process import ForwardProcess
    from diffusion_lab.schedules.edm import EDMSchedule

    t = torch.tensor([1e-4, 5e-4, 1e-3, 2e-3])
    for degradation in (VarianceExploding(), VariancePreserving()):
        process = ForwardProcess(degradation, EDMSchedule(), (1, 4, 4))
        denoiser = Denoiser(lambda x, n, c: torch.zeros_like(x), EDMPrecond(), Identity())
        loss = Denoising(UniformTime(), weighting.EDMWeighting())(
            denoiser, process, torch.randn(4, 1, 4, 4), t=t
        )
        assert torch.isfinite(loss).all()
