"""Blur, blur+noise, mask and GUD: closed-form properties, and every sampler against an exact denoiser.

For Gaussian data that is diagonal in the process's basis, c0 ~ N(m, diag(v)), the posterior mean
is linear per component: E[c0 | c_t] = m + α v / (α² v + σ²) (c_t − α m). Samplers driven by this
oracle must reproduce m and v. Tolerances: n = 2000 samples give a standard error of √(2/2000) ≈ 3%
on each component's variance (≈ 2.5% averaged in absolute value); at the step counts used the
discretisation bias measured 3–7% (blur frequencies switch on within a short stretch of t). We
require the mean absolute relative variance error ≤ 12% and the mean error ≤ 0.1 std; the naive
re-corruption sampler, which ignores what x_t says about the noise, misses by far more.
"""

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from diffusion_lab.bases import DCT, PCA, Identity
from diffusion_lab.degradations.blur import Blur, BlurNoise
from diffusion_lab.degradations.gaussian import VariancePreserving
from diffusion_lab.degradations.gud import GUD
from diffusion_lab.degradations.mask import Mask
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers import ancestral, ddim, dpmpp, grids, momentum, pf_ode, sde, unipc
from diffusion_lab.schedules import Cosine
from diffusion_lab.schedules.blur import GeometricBlur
from tests.numerics import f32_tol

SHAPE = (1, 8, 8)


class GaussianInBasis(torch.nn.Module):
    """Exact denoiser for c0 = U x0 ~ N(m, diag(v))."""

    def __init__(self, basis, m, v):
        super().__init__()
        self.basis, self.m, self.v = basis, m, v

    def sample(self, n, generator=None):
        return self.basis.inverse(
            self.m + self.v.sqrt() * torch.randn((n, *SHAPE), generator=generator)
        )

    def forward(self, x, state, cond=None):
        a, s = state.alpha, state.sigma
        c = self.basis(x)
        return self.basis.inverse(self.m + a * self.v / (a**2 * self.v + s**2) * (c - a * self.m))


def _data(basis):
    gen = torch.Generator().manual_seed(0)
    m = 0.3 * torch.randn(SHAPE, generator=gen)
    v = 0.02 + 0.3 * torch.rand(SHAPE, generator=gen)
    return GaussianInBasis(basis, m, v)


def _statistics(data, n=4000):
    x = data.sample(n, torch.Generator().manual_seed(1))
    c = data.basis(x)
    return SimpleNamespace(
        images=x,
        mean=x.mean(0),
        std=x.std(0),
        dct_variance=c.var(0),
        channel_means=x.mean((2, 3)),
        pca_components=None,
        pca_variance=None,
    )


def _process(kind):
    if kind == "blur_noise":
        deg, sched = BlurNoise(noise_min=0.05, noise_max=1.0), GeometricBlur(0.3, 4.0)
    elif kind == "mask":
        deg, sched = Mask(fade=1.0, noise_min=0.05, noise_max=1.0), None
    elif kind == "gud_dct":
        deg, sched = GUD(DCT(), softness=1.0, order="frequency", whiten=True), Cosine()
    else:  # gud_row: nearly sequential rows in the pixel basis
        deg, sched = GUD(Identity(), softness=0.5, order="row", whiten=False), Cosine()
    process = ForwardProcess(deg, sched, SHAPE)
    data = _data(process.basis.setup(SHAPE, None))
    process.setup(_statistics(data))
    return process, data


SAMPLERS = {
    "momentum": partial(momentum.momentum, num_steps=100, grid=grids.uniform),
    "ddim": partial(ddim.ddim, num_steps=200, grid=grids.uniform),
    "ancestral": partial(ancestral.ancestral, num_steps=400, grid=grids.uniform),
    "sde": partial(sde.sde, num_steps=200, grid=grids.uniform),
    "pc": partial(sde.pc, num_steps=100, grid=grids.uniform, corrector_steps=1, snr=0.05),
    "heun": partial(pf_ode.heun, num_steps=100, grid=grids.uniform),
    "dpmpp_2m": partial(dpmpp.dpmpp, num_steps=100, grid=grids.uniform),
    "dpmpp_2m_sde": partial(dpmpp.dpmpp, num_steps=200, grid=grids.uniform, eta=1.0),
    "unipc": partial(unipc.unipc, num_steps=100, grid=grids.uniform),
}
KINDS = ["blur_noise", "mask", "gud_dct", "gud_row"]


def _prior_from_data(process, data, n, gen):
    """x_1 drawn from the exact marginal at t = 1 (isolates the samplers from prior fits)."""
    x0 = data.sample(n, gen)
    return process.sample(x0, torch.ones(n), torch.randn((n, *SHAPE), generator=gen))[0]


def _errors(sampler, kind):
    process, data = _process(kind)
    gen = torch.Generator().manual_seed(2)
    c = process.basis(
        sampler(data, process, _prior_from_data(process, data, 2000, gen), generator=gen)
    )
    mean_err = ((c.mean(0) - data.m).abs() / data.v.sqrt()).mean().item()
    return mean_err, (c.var(0) / data.v - 1).abs().mean().item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_recover_gaussian_data(kind, name):
    mean_err, var_err = _errors(SAMPLERS[name], kind)
    assert mean_err < 0.1 and var_err < 0.12


def test_momentum_beats_naive_recorruption():
    naive = _errors(partial(momentum.soft_naive, num_steps=100, grid=grids.uniform), "blur_noise")[
        1
    ]
    assert naive > 2 * _errors(SAMPLERS["momentum"], "blur_noise")[1] and naive > 0.2


def test_blur_keeps_the_mean_and_damps_high_frequencies():
    process, _ = _process("blur_noise")
    alpha = process.state(torch.tensor([0.2, 0.6, 1.0])).alpha
    assert torch.all(alpha[:, :, 0, 0] == 1)  # DC: the per-channel mean survives
    assert torch.all(alpha[1:] <= alpha[:-1])  # more blur later
    assert alpha[-1, 0, -1, -1] < 1e-3
    state0 = process.state(torch.zeros(1))
    assert torch.all(state0.alpha == 1) and torch.all(state0.sigma == 0)  # clean at t = 0


def test_blur_semigroup_in_alpha():
    """Heat semigroup: blurring by σ1 then σ2 is blurring by √(σ1² + σ2²)."""
    deg = Blur()
    deg.setup(SHAPE, None)
    lam = deg.basis.frequencies_squared.double()  # the identity in float64

    def alpha(s):
        return torch.exp(-lam * s**2 / 2)

    assert torch.allclose(alpha(1.0) * alpha(2.0), alpha(math.sqrt(5.0)), rtol=0, atol=1e-12)


def test_gud_endpoints_and_ordering():
    process, _ = _process("gud_row")
    s0, s1 = process.state(torch.zeros(1)), process.state(torch.ones(1))
    assert torch.all(s0.sigma == 0) and torch.all(s0.alpha == 1)
    lam1 = torch.log(s1.alpha**2 / s1.sigma**2)
    # derived (GUD is float32 only): λ(τ) is ill-conditioned at τ = 1, |dλ/dτ| = 2 Δφ / (sin φ cos φ)
    # ≈ 470, times ~4 roundings of the clock and φ, plus ~8 roundings of log(α²/σ²) at |λ| = 10
    cosine = process.schedule
    phi = cosine._phi_max
    slope = 2 * (phi - cosine._phi_min) / (math.sin(phi) * math.cos(phi))
    tol = f32_tol(4, slope) + f32_tol(8, 10.0)
    assert torch.allclose(lam1, torch.full_like(lam1, -10.0), rtol=0, atol=tol)  # clocks at τ = 1
    mid = process.state(torch.tensor([0.5])).sigma[0, 0]
    assert (
        torch.all(mid[0] <= mid[-1]) and mid[0].sum() < mid[-1].sum()
    )  # top rows: generated first, noised last


def test_gud_infinite_softness_is_ordinary_diffusion():
    gud = ForwardProcess(GUD(Identity(), softness=1e12, order="row"), Cosine(), SHAPE).setup(None)
    vp = ForwardProcess(VariancePreserving(), Cosine(), SHAPE)
    t = torch.tensor([0.1, 0.5, 0.9])
    a, b = gud.state(t), vp.state(t)
    # derived (GUD is float32 only): the clocks agree to an ulp and |dα/dτ|, |dσ/dτ| <= π/2;
    # each path is ~8 float32 operations (tan, log, logsigmoid, exp) on values <= 1
    tol = f32_tol(8 + 2, 1.0)
    assert torch.allclose(a.alpha, b.alpha.expand_as(a.alpha), rtol=0, atol=tol)
    assert torch.allclose(a.sigma, b.sigma.expand_as(a.sigma), rtol=0, atol=tol)


def test_gud_small_softness_is_sequential():
    process = ForwardProcess(GUD(Identity(), softness=1e-3, order="row"), Cosine(), SHAPE).setup(
        None
    )
    for t in torch.linspace(0.05, 0.95, 19):
        sigma = process.state(t.view(1)).sigma[0, 0]
        lam = torch.log(1 / sigma**2 - 1)
        partial_rows = ((lam > -9.99) & (sigma > 0)).any(1).sum().item()
        assert partial_rows <= 1  # at most one row is being generated at a time


def test_gud_whitening_floors_components_without_variance():
    """Rank-deficient data (10 of 64 pixels vary): the constant pixels are whitened with the floor,
    not with std ≈ 0, and the variance order spreads the informative pixels over the whole range."""
    gen = torch.Generator().manual_seed(0)
    x = torch.full((500, *SHAPE), 0.5)
    x.view(500, -1)[:, :10] += torch.linspace(0.2, 1.0, 10) * torch.randn(500, 10, generator=gen)
    gud = GUD(Identity(), softness=1.0, order="variance", whiten=True, variance_floor=1e-3)
    ForwardProcess(gud, Cosine(), SHAPE).setup(SimpleNamespace(images=x))
    var = x.var(0).flatten().double()
    scale = gud.noise_scale.flatten().double()
    assert torch.allclose(scale[10:] ** 2, 1e-3 * var.mean().expand(54), rtol=1e-5, atol=0)
    assert torch.allclose(scale[:10] ** 2, var[:10], rtol=1e-5, atol=0)
    start = gud.start.flatten()
    assert torch.all(start[10:] == 0)  # below the floor: generated last, together
    order = 1 - start[:10] / (1 - gud.width)  # ranks 0..9 of the 11 distinct variances, over 10
    assert sorted(order.tolist()) == pytest.approx([k / 10 for k in range(10)], abs=1e-6)
    with pytest.raises(ValueError, match="variance_floor"):
        GUD(Identity(), variance_floor=0)


def test_gud_validation():
    with pytest.raises(ValueError, match="softness"):
        GUD(Identity(), softness=0)
    with pytest.raises(ValueError, match="order"):
        GUD(Identity(), order="diagonal")


def test_pca_gud_without_statistics_is_left_for_a_checkpoint():
    process = ForwardProcess(GUD(PCA(), order="variance"), Cosine(), SHAPE).setup(None)
    with pytest.raises(RuntimeError, match="gud is not set up"):
        process.sample(torch.zeros(2, *SHAPE), torch.full((2,), 0.5))


def test_ddim_with_constant_sigma_is_cold_alg2():
    """DDIM (η = 0) per component: c_s = α_s ĉ0 + (σ_s/σ_t)(c_t − α_t ĉ0). With σ_s = σ_t this is
    x_s = x_t − D(x̂0, t) + D(x̂0, s), Cold Diffusion's Alg. 2 with D the blur (Bansal et al. 2022)."""
    from diffusion_lab.samplers import cold

    process, _ = _process("blur_noise")
    process.degradation.noise_sigma = lambda t: torch.full_like(t, 0.05)  # constant σ

    def restorer(x, state, cond=None):  # any deterministic estimate of x0 will do
        return torch.tanh(1.5 * x) + 0.1 * state.t.view(-1, 1, 1, 1)

    def grid(process, num_steps):  # stops short of t = 0, where σ would change
        return torch.linspace(1.0, 0.2, num_steps + 1)

    x_T = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    a = ddim.ddim(restorer, process, x_T, num_steps=12, grid=grid)
    b = cold.cold(restorer, process, x_T, num_steps=12, grid=grid)
    # derived (process.degrade is float32 only): 12 steps × 6 DCT transforms of inner length
    # H + W (+1 for the matrix), on values bounded by the per-sample norm
    scale = max(x_T.flatten(1).norm(dim=1).max(), a.flatten(1).norm(dim=1).max())
    assert torch.allclose(a, b, rtol=0, atol=f32_tol(12 * 6 * (8 + 8 + 1), scale))
