"""The exact T-step DDPM schedule: the table, its interpolant, and diffusers' own test constants.

diffusers' scheduler tests (tests/schedulers/test_scheduler_ddpm.py, test_scheduler_ddim.py) run a
dummy ε-model eps(x, k) = x k/(k + 1) from a fixed sample through DDPMScheduler / DDIMScheduler
with T = 1000 linear betas 1e-4..0.02 and clip_sample=True, and pin sum |x| and mean |x|. We
reproduce them with our ancestral and ddim samplers on VP ∘ DiscreteLinearBeta, without importing
diffusers: diffusers' timestep k (ᾱ_k = product of the first k + 1 factors) is our t = (k + 1)/T.
"""

import math

import pytest
import torch

from diffusion_lab.degradations import VariancePreserving
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers import ancestral, ddim, grids
from diffusion_lab.schedules import DiscreteLinearBeta, LinearBeta

T = 1000
SCHEDULE = DiscreteLinearBeta(T, 1e-4, 0.02)


def _cumprod() -> torch.Tensor:
    """ᾱ_i = Π_{j ≤ i} (1 − β_j), i = 1..T, DDPM's linear betas, float64."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)


def test_alpha_bar_on_the_grid_is_the_cumulative_product():
    i = torch.arange(0, T + 1, dtype=torch.float64)
    alpha_bar = torch.sigmoid(SCHEDULE.logsnr(i / T))
    assert alpha_bar[0] == 1  # t = 0 is clean data (λ = +∞)
    assert torch.allclose(alpha_bar[1:], _cumprod(), rtol=1e-12, atol=0)
    assert torch.allclose(SCHEDULE.alphas_cumprod(), _cumprod(), rtol=1e-13, atol=0)


def test_t_zero_is_clean_without_nan():
    zero = torch.zeros(3)
    assert SCHEDULE.logsnr(zero).eq(math.inf).all()
    state = ForwardProcess(VariancePreserving(), SCHEDULE, (2,)).state(zero)
    assert state.alpha.eq(1).all() and state.sigma.eq(0).all()
    assert torch.isfinite(state.noise_cond).all()
    assert SCHEDULE.t_from_logsnr(torch.tensor([math.inf])).item() == 0


def test_strictly_decreasing_and_exact_inverse():
    t = torch.cat([torch.linspace(0, 1, 10007, dtype=torch.float64)[1:], (torch.arange(T) + 1) / T])
    lam = SCHEDULE.logsnr(t)
    assert torch.isfinite(lam).all()
    fine = lam[:10006]
    assert (fine[1:] < fine[:-1]).all()
    assert torch.allclose(SCHEDULE.t_from_logsnr(lam), t, rtol=0, atol=1e-12)
    # and the other way: λ → t → λ, across the whole range λ(1) ≈ −10.1 .. λ(1/T) ≈ 9.2
    lam = torch.linspace(float(SCHEDULE.logsnr(torch.ones(1))), 9.0, 997, dtype=torch.float64)
    assert torch.allclose(SCHEDULE.logsnr(SCHEDULE.t_from_logsnr(lam)), lam, rtol=0, atol=1e-10)


def test_float32_times_keep_their_dtype_and_land_on_the_grid():
    t = grids.uniform(None, T)[:-1]  # float32 i/T, i = T..1
    lam = SCHEDULE.logsnr(t)
    assert lam.dtype == torch.float32 and SCHEDULE.t_from_logsnr(lam).dtype == torch.float32
    # float32 t = i/T rounded once moves ᾱ by < 1e-9 relative; λ itself is rounded to float32
    assert torch.allclose(torch.sigmoid(lam.double()), _cumprod().flip(0), rtol=1e-6, atol=0)


def test_continuous_linear_beta_is_only_an_approximation():
    """LinearBeta is the T → ∞ limit: at t = 1 its ᾱ = exp(−10.05) is ~7% above Π(1 − β_j)."""
    one = torch.ones(1, dtype=torch.float64)
    exact = _cumprod()[-1].item()
    continuous = torch.sigmoid(LinearBeta().logsnr(one)).item()
    discrete = torch.sigmoid(SCHEDULE.logsnr(one)).item()
    assert 0.05 < continuous / exact - 1 < 0.10
    assert discrete == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(
    "args",
    [(0, 1e-4, 0.02), (1000, 0.0, 0.02), (1000, 0.02, 1e-4), (1000, 1e-4, 1.0)],
)
def test_invalid_parameters_raise(args):
    with pytest.raises(ValueError, match="schedule needs"):
        DiscreteLinearBeta(*args)


# -- diffusers' scheduler test constants --------------------------------------------------------


def _dummy_sample() -> torch.Tensor:
    """diffusers' `dummy_sample_deter`: (4, 3, 8, 8) float32 in [0, 1)."""
    n = 4 * 3 * 8 * 8
    return (torch.arange(n).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


class DummyEpsModel:
    """diffusers' `dummy_model` eps(x, k) = x k/(k + 1) as a clip_sample=True x0-denoiser.
    Records the largest |x̂0| before clipping, to tell whether clipping was ever active."""

    def __init__(self):
        self.max_abs_x0 = []

    def __call__(self, x, state, cond=None):
        k = ((state.t.double() * T).round() - 1).to(x.dtype).view(-1, 1, 1, 1)
        eps = x * k / (k + 1)
        x0 = (x - state.sigma * eps) / state.alpha
        self.max_abs_x0.append(x0.abs().max().item())
        return x0.clamp(-1, 1)


PROCESS = ForwardProcess(VariancePreserving(), SCHEDULE, (3, 8, 8)).setup(None)


def test_ddpm_full_loop_reproduces_diffusers():
    """DDPMScheduler test_full_loop_no_noise: all 1000 steps, fixed_small variance, noise from
    torch.manual_seed(0) drawn each step but the last. The posterior mean uses the clipped x̂0,
    in diffusers as in ours, and clipping is active on part of this loop."""
    model = DummyEpsModel()
    x = ancestral.ancestral(
        model,
        PROCESS,
        _dummy_sample(),
        num_steps=T,
        grid=grids.uniform,  # t = 1, 0.999, ..., 0.001, 0: diffusers' k = 999..0
        generator=torch.Generator().manual_seed(0),
    )
    assert x.dtype == torch.float32
    assert abs(x.abs().sum().item() - 258.9606) < 1e-2
    assert abs(x.abs().mean().item() - 0.3372) < 1e-3
    assert max(model.max_abs_x0) > 1  # the constant covers clipped steps


def test_ddim_full_loop_reproduces_diffusers():
    """DDIMScheduler full_loop: 10 "leading" steps k = 900, 800, ..., 0, η = 0, final ᾱ = 1.
    diffusers keeps the unclipped ε in the direction term where our ddim re-derives ẑ from the
    clipped x̂0 (its use_clipped_model_output=True); on this loop |x̂0| < 1 throughout, so the
    two coincide and the constant does not tell them apart."""
    model = DummyEpsModel()
    x = ddim.ddim(
        model,
        PROCESS,
        _dummy_sample(),
        num_steps=10,
        grid=lambda process, n: grids.uniform(process, n, t_max=0.901, t_min=0.001),
        eta=0.0,
    )
    assert abs(x.abs().sum().item() - 172.0067) < 1e-2
    assert abs(x.abs().mean().item() - 0.223967) < 1e-3
    assert len(model.max_abs_x0) == 10 and max(model.max_abs_x0) < 1
