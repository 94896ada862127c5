"""Distillation targets against closed forms (exact Gaussian-mixture denoiser as the teacher).

- progressive: with the student's x̂0 set to the Alg. 2 target, ONE student DDIM step equals TWO
  teacher DDIM steps (an identity; float64, the samplers' own DDIM).
- consistency: f(x, σ_min) = x/α (the boundary condition), f = EDM's denoiser at σ_min = 0, the
  teacher ODE step equals the samplers' Euler/Heun step, and the consistency sampler with a perfect
  consistency function maps noise to the data distribution in one step.
"""

import math
from functools import partial

import pytest
import torch
from torch import nn

from diffusion_lab.build import ConfigError
from diffusion_lab.degradations import VarianceExploding, VariancePreserving
from diffusion_lab.distill import consistency as cm
from diffusion_lab.distill import progressive as pd
from diffusion_lab.precond import EDMPrecond
from diffusion_lab.process import ForwardProcess, State
from diffusion_lab.samplers import ddim, grids, pf_ode
from diffusion_lab.samplers.consistency import consistency
from diffusion_lab.schedules import Cosine, EDMSchedule
from tests.oracles import gaussian, two_modes

pytestmark = pytest.mark.usefixtures("one_thread")

VP = ForwardProcess(VariancePreserving(), Cosine(), (4,))
VE = ForwardProcess(VarianceExploding(), EDMSchedule(), (4,))


def fixed(*t):
    """A sampler grid that is exactly these times (ignores num_steps)."""
    return lambda process, num_steps: torch.tensor(t, dtype=torch.float64)


class Fn(nn.Module):
    """A denoiser given as a function of (x, state)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, state, cond=None):
        return self.fn(x, state)


@pytest.mark.parametrize("process", [VP, VE], ids=["vp_cosine", "ve_edm"])
@pytest.mark.parametrize("num_steps, i", [(8, 8), (8, 5), (4, 1), (1, 1)])
def test_one_student_step_equals_two_teacher_steps(process, num_steps, i):
    teacher = two_modes((4,), out_dtype=torch.float64)
    t, t_mid, t_next = i / num_steps, (i - 0.5) / num_steps, (i - 1) / num_steps
    z_t = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z_t = z_t * process.state(torch.tensor([t], dtype=torch.float64)).sigma * 1.3

    def x_tilde(x, state):  # the student that has learnt the target exactly
        b = torch.full((x.shape[0],), 1.0, dtype=torch.float64)
        return pd.target(teacher, process, x, t * b, t_mid * b, t_next * b)

    two = ddim.ddim(teacher, process, z_t, num_steps=2, grid=fixed(t, t_mid, t_next))
    one = ddim.ddim(Fn(x_tilde), process, z_t, num_steps=1, grid=fixed(t, t_next))
    assert torch.allclose(one, two, rtol=1e-10, atol=1e-10)


def test_batched_ddim_step_is_the_samplers_step():
    teacher = two_modes((4,), out_dtype=torch.float64)
    x = torch.randn(16, 4, dtype=torch.float64)
    t, s = torch.full((16,), 0.7, dtype=torch.float64), torch.full((16,), 0.4, dtype=torch.float64)
    mine, _ = pd.ddim_step(teacher, VP, x, t, s)
    theirs = ddim.ddim(teacher, VP, x, num_steps=1, grid=fixed(0.7, 0.4))
    assert torch.allclose(mine, theirs, atol=1e-12)


def test_the_loss_vanishes_at_the_target_and_weights_are_exact():
    teacher = two_modes((4,), out_dtype=torch.float64)
    method = pd.ProgressiveDistillation(teacher_steps=8, rounds=1)
    x0, _ = teacher.sample(32, generator=torch.Generator().manual_seed(1))

    def student(x, state):  # reconstructs the loss's own draw: x̃ at that state
        t = state.t.double()
        n = 4
        return pd.target(teacher, VP, x.double(), t, t - 0.5 / n, t - 1.0 / n).float()

    torch.manual_seed(0)
    loss = method.loss(Fn(student), teacher, VP, x0.float(), None, num_steps=4)
    assert loss.shape == (32,) and loss.abs().max() < 1e-4
    # truncated SNR = max(α²/σ², 1); v_mse weight makes ‖x̂0 − x0‖² exactly ‖v̂ − v‖²
    state = VP.state(torch.tensor([0.1, 0.5, 0.9]))
    snr = (state.alpha / state.sigma).flatten() ** 2
    assert torch.allclose(pd.weight(state), snr.clamp(min=1))
    x0, eps, x0_hat = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    a, s = state.alpha.flatten(1), state.sigma.flatten(1)
    x_t = a * x0 + s * eps
    v, v_hat = a * eps - s * x0, a * (x_t - a * x0_hat) / s - s * x0_hat
    w = pd.weight(state, "v_mse")
    assert torch.allclose(((v_hat - v) ** 2).sum(1), w * ((x0_hat - x0) ** 2).sum(1), rtol=1e-4)


def test_step_counts_that_cannot_be_halved_name_the_key():
    with pytest.raises(ValueError, match=r"distill.teacher_steps=12 .* multiple of 8"):
        pd.ProgressiveDistillation(teacher_steps=12, rounds=3)
    assert [pd.ProgressiveDistillation(16, 4).student_steps(k) for k in range(4)] == [8, 4, 2, 1]


def test_student_grid_is_every_other_teacher_point():
    teacher, student = grids.uniform(VP, 16), grids.uniform(VP, 8)
    assert torch.allclose(student, teacher[::2])
    t, t_mid, t_next = pd.student_times(8, 1000)
    assert set((t * 8).round().long().tolist()) == set(range(1, 9))
    assert torch.allclose(t - t_mid, torch.full_like(t, 1 / 16))


# -- consistency ---------------------------------------------------------------------------------
@pytest.mark.parametrize("process", [VP, VE], ids=["vp_cosine", "ve_edm"])
def test_boundary_condition(process):
    precond = cm.ConsistencyPrecond(sigma_data=0.5, sigma_min=0.002)
    t = process.t_from_logsnr(torch.tensor([-2 * math.log(0.002)]))
    state = process.state(t.double())
    c_skip, c_out, _ = precond(state.alpha, state.sigma)
    assert torch.allclose(c_skip * state.alpha, torch.ones(1, dtype=torch.float64), atol=1e-9)
    assert c_out.abs().max() < 1e-9  # f(x, σ_min) = x/α (= x for VE), whatever F says


def test_at_sigma_min_zero_it_is_edm():
    state = VP.state(torch.linspace(0.05, 1, 7))
    mine = cm.ConsistencyPrecond(0.5, sigma_min=0.0)(state.alpha, state.sigma)
    edm = EDMPrecond(0.5)(state.alpha, state.sigma)
    for a, b in zip(mine, edm):
        assert torch.allclose(a, b, rtol=1e-5)


def test_song_et_al_coefficients_for_ve():
    sigma = torch.tensor([0.01, 1.0, 80.0])
    c_skip, c_out, _ = cm.ConsistencyPrecond(0.5, 0.002)(torch.ones(3), sigma)
    assert torch.allclose(c_skip, 0.25 / ((sigma - 0.002) ** 2 + 0.25))
    assert torch.allclose(c_out, (sigma - 0.002) * 0.5 / (0.25 + sigma**2).sqrt())


@pytest.mark.parametrize("solver, sampler", [("euler", pf_ode.euler), ("heun", pf_ode.heun)])
def test_teacher_ode_step_is_the_samplers_step(solver, sampler):
    teacher = two_modes((4,), out_dtype=torch.float64)
    x = torch.randn(16, 4, dtype=torch.float64)
    t, s = 0.6, 0.3
    b = torch.ones(16, dtype=torch.float64)
    mine = cm.ode_step(teacher, VP, x, t * b, s * b, solver)
    # a 2-step grid whose second step (to 0) we never take: compare after the first step
    seen = []
    sampler(teacher, VP, x, num_steps=2, grid=fixed(t, s, 0.0), callback=seen.append)
    assert torch.allclose(mine, seen[0]["x"], atol=1e-10)


def test_pseudo_huber():
    a = torch.zeros(3, 16)
    b = torch.stack([torch.zeros(16), torch.full((16,), 0.5), torch.full((16,), 100.0)])
    d = cm.pseudo_huber(a, b)
    c = 0.00054 * 4
    assert d[0] == 0 and d[1] == pytest.approx(math.sqrt(4 + c**2) - c)
    assert d[2] == pytest.approx(400 - c, rel=1e-6)  # ≈ L2 norm far out: robust to outliers


def _gaussian_consistency(mean, std):
    """The exact consistency function of N(mean, std² I) data: the PF-ODE carries x̃ at σ̃ to
    mean + (x̃ − mean) std/√(std² + σ̃²) at σ̃ = 0."""

    def f(x, state: State):
        ratio = state.sigma / state.alpha
        return mean + (x / state.alpha - mean) * std / (std**2 + ratio**2).sqrt()

    return Fn(f)


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_consistency_sampler_with_the_exact_function_draws_the_data(num_steps):
    gen = torch.Generator().manual_seed(0)
    x_T = VP.prior(4000, generator=gen)
    grid = partial(grids.karras, sigma_min=0.002)
    x = consistency(
        _gaussian_consistency(0.2, 0.4), VP, x_T, num_steps=num_steps, grid=grid, generator=gen
    )
    assert x.mean().item() == pytest.approx(0.2, abs=0.02)
    assert x.std().item() == pytest.approx(0.4, rel=0.04)


def test_consistency_sampler_with_a_many_step_ode_draws_the_mixture():
    """f(x, t) = 100 teacher DDIM steps from t to 0 with the exact mixture denoiser."""
    data = two_modes((4,))

    def f(x, state):
        t = float(state.t.flatten()[0])
        return ddim.ddim(data, VP, x, num_steps=100, grid=lambda p, n: torch.linspace(t, 0, 101))

    gen = torch.Generator().manual_seed(2)
    x_T = VP.prior(4000, generator=gen)
    for steps in (1, 2):
        x = consistency(Fn(f), VP, x_T, num_steps=steps, grid=grids.karras, generator=gen)
        k = data.classify(x)
        assert (k == 0).float().mean().item() == pytest.approx(0.3, abs=0.035)
        assert (x - data.means[k].float()).std().item() == pytest.approx(0.15, rel=0.08)


def test_consistency_sampler_takes_explicit_sigmas_and_counts_calls():
    calls = []
    f = Fn(lambda x, state: calls.append(float(state.t[0])) or torch.zeros_like(x))
    consistency(f, VP, torch.zeros(2, 4), num_steps=2, grid=grids.karras, sigmas=[100.0, 0.5])
    assert len(calls) == 2 and calls[0] > calls[1]
    with pytest.raises(ValueError, match="sampler.sigmas"):
        consistency(f, VP, torch.zeros(2, 4), num_steps=3, grid=grids.karras, sigmas=[1.0])


def test_consistency_loss_is_zero_for_a_consistent_function():
    """The exact consistency function of Gaussian data has zero CD loss with an exact teacher
    step (data solver: the pair on one forward path; heun: tiny discretisation error)."""
    f = _gaussian_consistency(0.2, 0.4)
    teacher = gaussian(0.2, 0.4)
    x0 = 0.2 + 0.4 * torch.randn(256, 4, generator=torch.Generator().manual_seed(3))
    method = cm.ConsistencyDistillation(num_points=18, solver="heun", distance="l2")
    torch.manual_seed(0)
    assert method.loss(f, f, teacher, VP, x0, None).mean() < 1e-4
    method = cm.ConsistencyDistillation(num_points=18, solver="data", distance="l2")
    assert (
        method.loss(f, f, teacher, VP, x0, None).mean() > 1e-3
    )  # data pairs are not on one ODE path


def test_bad_consistency_settings_name_the_key():
    for kwargs, key in [
        ({"solver": "rk4"}, "distill.solver"),
        ({"mu": 1.0}, "distill.mu"),
        ({"distance": "lpips"}, "distill.distance"),
        ({"num_points": 1}, "distill.num_points"),
    ]:
        with pytest.raises(ValueError, match=key):
            cm.ConsistencyDistillation(**kwargs)
    assert issubclass(ConfigError, ValueError)
