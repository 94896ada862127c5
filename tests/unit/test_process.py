"""Forward process: marginals of x_t, state shapes, prior, the degrade mean."""

import pytest
import torch

from diffusion_lab.degradations import VarianceExploding, VariancePreserving
from diffusion_lab.process import ForwardProcess
from diffusion_lab.schedules import Cosine, EDMSchedule, LinearBeta


@pytest.fixture(
    params=[
        (VariancePreserving, Cosine),
        (VarianceExploding, EDMSchedule),
        (VariancePreserving, LinearBeta),
    ]
)
def process(request):
    deg, sched = request.param
    return ForwardProcess(deg(), sched(), (1, 4, 4))


def test_state_shapes(process):
    st = process.state(torch.rand(5))
    assert st.alpha.shape == st.sigma.shape == (5, 1, 1, 1)
    assert st.noise_cond.shape == (5,) and torch.isfinite(st.noise_cond).all()
    vec = ForwardProcess(VariancePreserving(), Cosine(), (2,)).state(torch.rand(3))
    assert vec.alpha.shape == (3, 1)


def test_clean_data_at_t0(process):
    st = process.state(torch.zeros(2))
    assert torch.all(st.sigma == 0) and torch.allclose(st.alpha, torch.ones(2, 1, 1, 1))
    assert torch.isfinite(st.noise_cond).all()


def test_marginals_of_x_t(process):
    """Data N(μ, s²): x_t has mean α μ and variance α² s² + σ², and degrade() is α x0."""
    torch.manual_seed(0)
    n, mu, s = 200_000, 0.4, 0.3
    x0 = mu + s * torch.randn(n, 1, 4, 4)
    for t in (0.2, 0.5, 0.8):
        tt = torch.full((n,), t)
        x_t, _, st = process.sample(x0, tt)
        a, sg = st.alpha[0].item(), st.sigma[0].item()
        tol = 4 * (a**2 * s**2 + sg**2) ** 0.5 / (16 * n) ** 0.5  # 4 standard errors
        assert x_t.mean().item() == pytest.approx(a * mu, abs=tol)
        assert x_t.var().item() == pytest.approx(a**2 * s**2 + sg**2, rel=0.01)
        assert torch.allclose(process.degrade(x0[:8], tt[:8]), a * x0[:8], atol=1e-6)


def test_sample_uses_given_noise(process):
    x0, z, t = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.rand(3)
    x_t, z_out, st = process.sample(x0, t, z)
    assert torch.equal(z_out, z)
    assert torch.allclose(x_t, st.alpha * x0 + st.sigma * z)


def test_prior_matches_marginal_scale(process):
    x = process.prior(4000, generator=torch.Generator().manual_seed(0))
    sigma_1 = process.state(torch.ones(1)).sigma.item()
    assert x.shape == (4000, 1, 4, 4)
    assert x.std().item() == pytest.approx(sigma_1, rel=0.02)


def test_bf16_autocast_keeps_diffusion_math_fp32(process):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_t, _, _ = process.sample(torch.randn(2, 1, 4, 4), torch.rand(2))
    assert x_t.dtype == torch.float32
