"""PF-ODE bits/dim and the DDPM variational bound against closed forms, with exact denoisers.

Every check compares with a density known in closed form, so no model is trained. The PF-ODE
result is the exact log-density of the model "prior at t = 1, then the ODE down to t_min, then
÷ α(t_min)" (diffusion_lab/metrics/likelihood.py); with the exact denoiser and the exact marginal
at t = 1 as prior that is the data density smoothed by N(0, r²), r = σ/α(t_min) per component.

Tolerances. The exactness checks run dopri5 at rtol = atol = 1e-6 (EXACT); their measured errors
against the closed forms are 1e-6 to 1.2e-4 nats (up to 2e-3 at the default 1e-5, ~1e-5 at 1e-7:
the error shrinks with the tolerance, so it is the solver's, not a bias). They allow 1e-3 nats,
8× the largest measured error and far below any modelling mistake (a missing log α(t_min) term,
a halved score or a wrong offset each fails at least one test by ≥ 0.01 nats or 1 bit/dim).
Comparisons with the *data* density (instead of the model's) add the prior mismatch, bounded in
each test's comment.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from diffusion_lab.backbones.mlp import MLP
from diffusion_lab.bases import DCT, Identity
from diffusion_lab.degradations import ColdBlur, VarianceExploding, VariancePreserving
from diffusion_lab.degradations.blur import BlurNoise
from diffusion_lab.degradations.gud import GUD
from diffusion_lab.denoiser import Denoiser
from diffusion_lab.metrics.likelihood import (
    bits_per_dim,
    default_t_min,
    uniform_dequantize,
)
from diffusion_lab.metrics.vlb import ddpm_vlb_bits_per_dim
from diffusion_lab.precond import EDMPrecond
from diffusion_lab.process import ForwardProcess
from diffusion_lab.schedules import Cosine, EDMSchedule
from diffusion_lab.schedules.blur import GeometricBlur
from diffusion_lab.schedules.blur_w2 import BlurW2
from tests.oracles import gaussian, two_modes

ODE_TOL = 1e-3  # nats; see the module docstring
EXACT = {"rtol": 1e-6, "atol": 1e-6}
LN2 = math.log(2)


def _processes(dim):
    return {
        "vp_cosine": ForwardProcess(VariancePreserving(), Cosine(), (dim,)),
        "ve_edm": ForwardProcess(VarianceExploding(), EDMSchedule(), (dim,)),
    }


def _scalars(process, t):
    state = process.state(torch.tensor([float(t)]))
    return state.alpha.double().flatten()[0], state.sigma.double().flatten()[0]


def _normal(x, mean, var):
    return -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * torch.as_tensor(var)))


def _gaussian_model_log_prob(process, x, t_min, mu, s):
    """Exact density of the model for data N(μ, s²) with its own prior N(0, σ(1)²): the PF-ODE
    flow of Gaussian data keeps each component's z-score, c_t = α_t μ + √v_t (c − α μ)/√v, so
    x̂ = c_{t_min}/α_min ↦ c_1 is affine with slope √v_1 α_min / √v_min (v_t = α_t² s² + σ_t²)."""
    (a0, s0), (a1, s1) = _scalars(process, t_min), _scalars(process, 1.0)
    v0, v1 = a0**2 * s**2 + s0**2, a1**2 * s**2 + s1**2
    slope = v1.sqrt() * a0 / v0.sqrt()
    c1 = a1 * mu + slope * (x.double() - mu)
    return (_normal(c1, 0.0, s1**2) + torch.log(slope)).sum(1)


def _mixture_log_prob(data, x, alpha=1.0, extra_var=0.0):
    """log of Σ_k π_k N(x; α μ_k, α² s_k² + extra_var): the mixture's marginal at (α, σ² = extra)."""
    terms = [
        torch.log(w) + _normal(x.double(), alpha * m, alpha**2 * s**2 + extra_var).sum(1)
        for w, m, s in zip(data.weights, data.means, data.stds)
    ]
    return torch.logsumexp(torch.stack(terms), 0)


# -- (a) Gaussian data, isotropic VP and VE ---------------------------------------------------------
@pytest.mark.parametrize("name", ["vp_cosine", "ve_edm"])
def test_gaussian_log_density_is_exact(name):
    process, (mu, s) = _processes(4)[name], (0.2, 0.4)
    data = gaussian(mu, s)
    x, _ = data.sample(32, torch.Generator().manual_seed(0))
    result = bits_per_dim(data, process, x, dequantize=False, hutchinson=False, **EXACT)
    model = _gaussian_model_log_prob(process, x, result.t_min, mu, s)
    assert (result.log_prob - model).abs().max() < ODE_TOL
    assert torch.allclose(result.bits_per_dim, -result.log_prob / (4 * LN2))
    assert result.nfe > 0
    # Against the data density log N(x; μ, s²): the model's prior N(0, σ1²) misses the marginal
    # N(α1 μ, α1² s² + σ1²) by ≈ α1 μ c1/σ1² ≤ 6e-3 nats per dim (VP: α1 = 6.7e-3, |c1| ≤ 4) or
    # μ c1/σ1² ≤ 1e-2 (VE: σ1 = 80); the t_min smoothing (r = 1e-3) adds O(r²/s²) ≈ 1e-5.
    true = _normal(x.double(), mu, s**2).sum(1)
    assert (result.log_prob - true).abs().max() < 0.05


# -- (b) Gaussian mixture ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp_cosine", "ve_edm"])
def test_mixture_log_density_is_exact(name):
    process, data = _processes(2)[name], two_modes((2,))
    x, _ = data.sample(32, torch.Generator().manual_seed(0))
    a1, s1 = _scalars(process, 1.0)
    result = bits_per_dim(
        data,
        process,
        x,
        dequantize=False,
        hutchinson=False,
        prior=lambda x1: _mixture_log_prob(data, x1, a1, s1**2),  # the exact marginal at t = 1
        **EXACT,
    )
    a0, s0 = _scalars(process, result.t_min)
    exact = _mixture_log_prob(data, x, extra_var=(s0 / a0) ** 2)
    assert (result.log_prob - exact).abs().max() < ODE_TOL
    # With the process's own prior the result is within the prior mismatch (as in (a)) of the
    # unsmoothed data density.
    default = bits_per_dim(data, process, x, dequantize=False, hutchinson=False)
    assert (default.log_prob - _mixture_log_prob(data, x)).abs().max() < 0.05


# -- (c) per-component processes: blur_noise (DCT) and GUD with whitened noise ------------------------
SHAPE = (1, 4, 4)


class GaussianInBasis(torch.nn.Module):
    """Exact denoiser for c0 = U x0 ~ N(m, diag(v)): E[c0 | c_t] = m + α v/(α² v + σ²)(c_t − α m)."""

    def __init__(self, basis, m, v):
        super().__init__()
        self.basis, self.m, self.v = basis, m, v

    def sample(self, n, generator=None):
        z = torch.randn((n, *SHAPE), generator=generator, dtype=torch.float64)
        return self.basis.inverse(self.m + self.v.sqrt() * z).float()

    def forward(self, x, state, cond=None):
        a, s = state.alpha.double(), state.sigma.double()
        c = self.basis(x.double())
        return self.basis.inverse(self.m + a * self.v / (a**2 * self.v + s**2) * (c - a * self.m))


def _per_component(kind):
    if kind == "blur_noise":
        process = ForwardProcess(BlurNoise(0.05, 1.0), GeometricBlur(0.3, 4.0), SHAPE)
    else:  # GUD needs order="none" for full-rank noise; whitening makes σ per component
        process = ForwardProcess(GUD(DCT(), order="none", whiten=True), Cosine(), SHAPE)
    basis = process.basis.setup(SHAPE)
    gen = torch.Generator().manual_seed(0)
    m = 0.3 * torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    v = 0.02 + 0.3 * torch.rand(SHAPE, generator=gen, dtype=torch.float64)
    data = GaussianInBasis(basis, m, v)
    x = data.sample(2000, torch.Generator().manual_seed(1))
    c = basis(x)
    process.setup(SimpleNamespace(images=x, dct_variance=c.var(0), channel_means=x.mean((2, 3))))
    return process, data


def _exact_run(process, data, x):
    """PF-ODE log-density with the exact denoiser and the exact marginal at t = 1 as prior, and
    its error against the closed form (data smoothed by r² = (σ/α)² at t_min). Hutchinson is
    exact here: the Jacobian is diagonal in the basis and ε_i² = 1."""
    state1 = process.state(torch.ones(1))
    a1, s1 = state1.alpha.double(), state1.sigma.double()

    def marginal_at_1(x1):
        c1 = process.basis(x1.double())
        return _normal(c1, a1 * data.m, a1**2 * data.v + s1**2).flatten(1).sum(1)

    result = bits_per_dim(data, process, x, dequantize=False, prior=marginal_at_1, **EXACT)
    state = process.state(torch.tensor([result.t_min]))
    r2 = (state.sigma.double() / state.alpha.double()) ** 2
    exact = _normal(process.basis(x.double()), data.m, data.v + r2).flatten(1).sum(1)
    return result, (result.log_prob - exact).abs().max()


@pytest.mark.parametrize("kind", ["blur_noise", "gud"])
def test_per_component_log_density_is_exact(kind):
    process, data = _per_component(kind)
    x = data.sample(16, torch.Generator().manual_seed(2))
    assert _exact_run(process, data, x)[1] < ODE_TOL


def test_blur_w2_schedule_is_smooth_for_the_likelihood_ode():
    """The W2-equalised blur schedule is tabulated; interpolated linearly it had a kink at every
    knot and dopri5 took 10.8× the NFE of the geometric schedule at rtol = atol = 1e-6 (1058 vs
    98) and levelled off at 3e-3 nats. Cubic Hermite with the exact slopes (C¹): measured 176 NFE
    and 2.8e-5 nats. Same σ_B range, same Gaussian data, exact denoiser and prior."""
    geometric, data = _per_component("blur_noise")
    w2 = ForwardProcess(BlurNoise(0.05, 1.0), BlurW2(0.3, 4.0), SHAPE)
    w2.basis.setup(SHAPE)
    x = data.sample(2000, torch.Generator().manual_seed(1))
    c = w2.basis(x)
    w2.setup(SimpleNamespace(dct_variance=c.var(0), channel_means=x.mean((2, 3)), mean=x.mean(0)))
    x = data.sample(16, torch.Generator().manual_seed(2))
    nfe = {}
    for name, process in (("geometric", geometric), ("w2", w2)):
        result, error = _exact_run(process, data, x)
        assert error < ODE_TOL
        nfe[name] = result.nfe
    assert nfe["w2"] < 2.5 * nfe["geometric"], nfe


def test_blur_prior_log_prob_is_the_density_prior_draws_from():
    """Blur's prior: Gaussian non-DC coefficients and a GMM on the DC (here one component, one
    channel, so every coefficient is an independent Gaussian). Cross-check against an independent
    formula and against 20000 draws: E[−log p] must equal the draws' entropy Σ ½ log(2πe var_i).
    Standard errors: 0.02 nats for the mean (√(D/2)/√n) and ~0.02 for the summed log-variances
    (√(2/n) per component); a variance off by 2× in one component shifts the gap by ≥ 0.1."""
    process, _ = _per_component("blur_noise")
    deg = process.degradation
    x1 = process.prior(20000, generator=torch.Generator().manual_seed(3))
    c1 = process.basis(x1.double())
    state = process.state(torch.ones(1))
    var = state.alpha.double() ** 2 * deg.coef_std.double() ** 2 + state.sigma.double() ** 2
    mean = torch.zeros_like(var)
    mean[..., 0, 0] = deg.dc_prior.means.double().flatten()
    var[..., 0, 0] = deg.dc_prior.scale_tril.double().flatten() ** 2 + state.sigma.double() ** 2
    log_p = process.prior_log_prob(x1)
    assert torch.allclose(log_p, _normal(c1, mean, var).flatten(1).sum(1), atol=1e-6)
    entropy = (0.5 * torch.log(2 * math.pi * math.e * c1.var(0))).sum()
    assert (-log_p.mean() - entropy).abs() < 0.08


def test_processes_without_a_density_raise():
    cold = ForwardProcess(ColdBlur(), None, SHAPE)
    staggered = ForwardProcess(GUD(Identity(), order="row"), Cosine(), SHAPE).setup(None)
    for process in (cold, staggered):
        with pytest.raises(ValueError, match="full-rank noise"):
            bits_per_dim(None, process, torch.zeros(1, *SHAPE))


# -- (d) dequantisation ------------------------------------------------------------------------------
def test_dequantised_bits_per_dim_is_the_discrete_nll_plus_nothing_else():
    """8-bit data from N(0, 0.25²) (|x| > 1 has probability 6e-5, so clipping is negligible).
    (1) the offset: bits/dim = −log₂ p(x̃)/D + 7 exactly, x̃ the same dequantised draw;
    (2) the meaning: the mean over samples matches the discrete NLL −log₂ P(k)/D, P(k) the model's
    mass on the bin [2k/256 − 1, 2(k + 1)/256 − 1). A single draw differs from it by ∇log p·(x̃ − x_c)
    ≈ 0.01 nats per sample (zero mean; the mean over 64 samples has SE ≈ 5e-4 bits/dim); the
    Jensen gap is O(w²/s²) ≈ 1e-3 nats and the prior mismatch ≤ 1e-3 nats: 5e-3 bits/dim."""
    process, (mu, s) = _processes(4)["vp_cosine"], (0.0, 0.25)
    data = gaussian(mu, s)
    x, _ = data.sample(64, torch.Generator().manual_seed(0))
    k = torch.round((x.double() + 1) / 2 * 255).clamp(0, 255)
    x8 = (2 * k / 255 - 1).float()
    gen = torch.Generator().manual_seed(5)
    result = bits_per_dim(data, process, x8, hutchinson=False, generator=gen, **EXACT)
    x_deq = uniform_dequantize(x8, 256, torch.Generator().manual_seed(5))
    assert torch.all((x_deq >= 2 * k / 256 - 1) & (x_deq < 2 * (k + 1) / 256 - 1))
    model = _gaussian_model_log_prob(process, x_deq, result.t_min, mu, s)
    assert (result.bits_per_dim - (-model / (4 * LN2) + 7)).abs().max() < ODE_TOL / (4 * LN2)

    normal = torch.distributions.Normal(mu, s)
    mass = normal.cdf(2 * (k + 1) / 256 - 1) - normal.cdf(2 * k / 256 - 1)
    discrete = -torch.log2(mass).sum(1) / 4
    assert (result.bits_per_dim.mean() - discrete.mean()).abs() < 5e-3


# -- (e) Hutchinson ----------------------------------------------------------------------------------
def test_hutchinson_is_unbiased():
    """The mixture's Jacobian is not diagonal (the posterior weights couple the coordinates), so
    single probes scatter (std ≈ 0.28 nats at this point). 1024 probes, one per copy of the same
    point in one solve: the mean must match the exact trace within 4 standard errors (0.035 nats)
    plus the ODE tolerance."""
    process, data = _processes(2)["vp_cosine"], two_modes((2,))
    x = torch.tensor([[0.5, 0.7]]).expand(1024, 2)
    exact = bits_per_dim(data, process, x[:1], dequantize=False, hutchinson=False).log_prob
    gen = torch.Generator().manual_seed(4)
    probes = bits_per_dim(data, process, x, dequantize=False, generator=gen).log_prob
    std = probes.std()
    assert std > 0.1  # the estimator really is stochastic here
    assert (probes.mean() - exact).abs() < 4 * std / math.sqrt(1024) + ODE_TOL
    again = bits_per_dim(
        data, process, x[:8], dequantize=False, generator=torch.Generator().manual_seed(4)
    )
    assert torch.allclose(again.log_prob, probes[:8], atol=ODE_TOL)  # probes drawn row by row


def test_real_denoiser_under_no_grad():
    """An nn.Module denoiser (MLP backbone, EDM preconditioning) inside torch.no_grad(): the
    divergence still gets its gradients, the parameters get none, the result is finite."""
    torch.manual_seed(0)
    backbone = MLP(dim=4, hidden=32, depth=1, emb_dim=16)
    torch.nn.init.normal_(backbone.fc_out.weight, std=0.1)
    denoiser = Denoiser(backbone, EDMPrecond(), Identity())
    process = _processes(4)["vp_cosine"]
    with torch.no_grad():
        result = bits_per_dim(
            denoiser, process, torch.rand(8, 4) * 2 - 1, generator=torch.Generator().manual_seed(0)
        )
    assert torch.isfinite(result.bits_per_dim).all() and result.nfe > 0
    assert all(p.grad is None for p in denoiser.parameters())


def test_default_t_min_sits_at_the_noise_ratio():
    for process in _processes(4).values():
        t = default_t_min(process)
        a, s = _scalars(process, t)
        assert s / a == pytest.approx(1e-3, rel=1e-3)
    blur, _ = _per_component("blur_noise")
    assert default_t_min(blur) == 1e-5  # the noise floor 0.05 never gets below 1e-3


# -- (f) DDPM variational bound -------------------------------------------------------------------------
def test_ddpm_bound_is_above_the_nll_and_tightens_with_steps():
    """Gaussian data N(0.2, 0.4²), continuous decoder, on the grid from t_min (σ/α = 0.01) to 1.
    The gap E[VLB] − E[NLL] is ≥ 0 (a bound) and shrinks like the squared log-SNR steps
    (measured 0.97, 0.42, 0.11 bits/dim at T = 100, 400, 1600). Per-sample terms are single-draw
    estimates: the paired standard error of the mean gap over 2000 samples is ≤ 0.03 bits/dim,
    so we require gap ≥ −3 SE, each refinement to cut the gap by at least 0.2 and the last < 0.2."""
    process, (mu, s) = _processes(4)["vp_cosine"], (0.2, 0.4)
    data = gaussian(mu, s)
    x, _ = data.sample(2000, torch.Generator().manual_seed(0))
    nll = -_normal(x.double(), mu, s**2).sum(1) / (4 * LN2)
    t_min = default_t_min(process, noise_ratio=1e-2)
    gaps = []
    for steps in (100, 400, 1600):
        gen = torch.Generator().manual_seed(1)
        vlb = ddpm_vlb_bits_per_dim(
            data, process, x, num_steps=steps, num_bins=None, t_min=t_min, generator=gen
        )
        gap = vlb.bits_per_dim - nll
        assert gap.mean() > -3 * gap.std() / math.sqrt(len(gap))
        gaps.append(gap.mean().item())
        assert vlb.nfe == steps
    assert gaps[0] - gaps[1] > 0.2 and gaps[1] - gaps[2] > 0.2 and gaps[2] < 0.2


def test_ddpm_bound_with_discretised_decoder_bounds_the_discrete_nll():
    """8-bit data from N(0, 0.25²): the bound (T = 1000) must lie above the exact discrete NLL
    −log₂ P(k)/D, P the data's mass on [x − 1/255, x + 1/255] (SE of the mean gap ≈ 0.015)."""
    process, (mu, s) = _processes(4)["vp_cosine"], (0.0, 0.25)
    data = gaussian(mu, s)
    x, _ = data.sample(1000, torch.Generator().manual_seed(0))
    x8 = torch.round((x.double() + 1) / 2 * 255).clamp(0, 255) * 2 / 255 - 1
    normal = torch.distributions.Normal(mu, s)
    discrete = -torch.log2(normal.cdf(x8 + 1 / 255) - normal.cdf(x8 - 1 / 255)).sum(1) / 4
    vlb = ddpm_vlb_bits_per_dim(
        data, process, x8.float(), t_min=default_t_min(process, noise_ratio=1e-2)
    )
    gap = vlb.bits_per_dim - discrete
    assert 0 < gap.mean() < 0.4


def test_ddpm_bound_needs_variance_preserving():
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="variance-preserving"):
        ddpm_vlb_bits_per_dim(gaussian(0.0, 0.5), _processes(4)["ve_edm"], x, num_steps=4)
    blur, data = _per_component("blur_noise")
    with pytest.raises(ValueError, match="variance-preserving"):
        ddpm_vlb_bits_per_dim(data, blur, torch.zeros(2, *SHAPE), num_steps=4)
