"""Schedules: endpoints, monotonicity, closed-form inverses, and the DDPM correspondence."""

import math

import pytest
import torch

from diffusion_lab.degradations import VarianceExploding, VariancePreserving
from diffusion_lab.schedules import Cosine, EDMSchedule, LinearBeta, Sigmoid

SCHEDULES = [
    LinearBeta(),
    Cosine(),
    Sigmoid(),
    EDMSchedule(),
    Cosine(logsnr_min=-8, logsnr_max=8),
    EDMSchedule(sigma_min=0.002),
]
t = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_logsnr_strictly_decreasing(schedule):
    lam = schedule.logsnr(t)
    assert torch.isfinite(lam).all()
    assert (lam[1:] < lam[:-1]).all()


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_inverse_round_trip(schedule):
    assert torch.allclose(schedule.t_from_logsnr(schedule.logsnr(t)), t, atol=1e-6)


def test_endpoints():
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    assert LinearBeta().logsnr(zero).item() == math.inf
    assert LinearBeta().logsnr(one).item() == pytest.approx(-math.log(math.expm1(0.1 + 9.95)))
    assert Cosine().logsnr(zero).item() == math.inf
    assert Cosine(logsnr_min=-10).logsnr(one).item() == pytest.approx(-10)
    assert Cosine(logsnr_min=-7, logsnr_max=9).logsnr(zero).item() == pytest.approx(9)
    assert Sigmoid().logsnr(zero).item() == math.inf
    assert Sigmoid().logsnr(one).item() == pytest.approx(math.log(1e-9), abs=1e-6)
    assert EDMSchedule().sigma(zero).item() == 0 and EDMSchedule().sigma(
        one
    ).item() == pytest.approx(80)
    assert EDMSchedule(sigma_min=0.002).sigma(zero).item() == pytest.approx(0.002)


def test_cosine_matches_nichol_dhariwal():
    """With λ_max ⇔ s = 0.008 and λ_min → −∞, ᾱ = cos²(π/2 (t + s)/(1 + s)) (their eq. 17 numerator)."""
    s = 0.008
    lam_max = -2 * math.log(math.tan(math.pi / 2 * s / (1 + s)))
    sched = Cosine(logsnr_min=-60, logsnr_max=lam_max)
    tt = torch.linspace(0, 0.99, 100, dtype=torch.float64)
    alpha_bar = torch.sigmoid(sched.logsnr(tt))
    assert torch.allclose(alpha_bar, torch.cos(math.pi / 2 * (tt + s) / (1 + s)) ** 2, atol=1e-9)


def test_linear_beta_is_ddpm_on_grid():
    """Continuous linear-β ᾱ(i/T) matches DDPM's Π(1 − β_j) to within the discretisation error."""
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    log_alpha_bar = torch.cumsum(torch.log1p(-betas), 0)
    tt = torch.arange(1, T + 1, dtype=torch.float64) / T
    cont = -torch.nn.functional.softplus(-LinearBeta().logsnr(tt))  # log sigmoid(λ) = log ᾱ
    assert ((cont - log_alpha_bar).abs() <= 0.05 * log_alpha_bar.abs() + 1e-4).all()  # within 5%
    assert (cont.exp() - log_alpha_bar.exp()).abs().max() < 2e-3


def test_vp_and_ve_share_the_noise_to_signal_ratio():
    lam = Cosine().logsnr(t).view(-1, 1)
    a_vp, s_vp = VariancePreserving()._alpha_sigma(lam)
    a_ve, s_ve = VarianceExploding()._alpha_sigma(lam)
    assert torch.allclose(a_vp**2 + s_vp**2, torch.ones_like(lam))
    assert torch.all(a_ve == 1)
    assert torch.allclose(s_vp / a_vp, s_ve / a_ve, rtol=1e-6)
    assert torch.allclose(torch.log(a_vp**2 / s_vp**2), lam, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearBeta(0.5, 0.1),
        lambda: Cosine(3, 2),
        lambda: Sigmoid(tau=0),
        lambda: EDMSchedule(-1),
    ],
)
def test_invalid_parameters_raise(make):
    with pytest.raises(ValueError, match="schedule needs"):
        make()
