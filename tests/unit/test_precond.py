"""Preconditioning identities (Karras et al. 2022, Table 1 and App. B.6)."""

import pytest
import torch

from diffusion_lab.bases import Identity
from diffusion_lab.denoiser import Denoiser
from diffusion_lab.precond import X0, EDMPrecond, Eps, V
from diffusion_lab.process import State

SD = 0.5
alpha = torch.tensor([1.0, 0.9, 0.5, 0.05]).view(-1, 1)
sigma = torch.tensor([0.01, 0.4, 0.8, 2.0]).view(-1, 1)
# the identities between formulas are checked in float64 (a few float32 roundings, amplified by
# 1/α = 20 at α = 0.05, would depend on the CPU's kernels); a wrong coefficient is off by O(0.1)
A64, S64 = alpha.double(), sigma.double()
EXACT = dict(rtol=1e-12, atol=1e-12)


def test_edm_reduces_to_paper_when_alpha_is_one():
    s = S64
    c_skip, c_out, c_in = EDMPrecond(SD)(torch.ones_like(s), s)
    assert torch.allclose(c_skip, SD**2 / (s**2 + SD**2), **EXACT)
    assert torch.allclose(c_out, s * SD / (s**2 + SD**2).sqrt(), **EXACT)
    assert torch.allclose(c_in, 1 / (s**2 + SD**2).sqrt(), **EXACT)


def test_edm_unit_variance_input_and_target():
    """x0 ~ N(0, σ_d²): Var(c_in x_t) = 1 and Var((x0 − c_skip x_t)/c_out) = 1 (EDM App. B.6)."""
    c_skip, c_out, c_in = EDMPrecond(SD)(A64, S64)
    var_x = A64**2 * SD**2 + S64**2
    assert torch.allclose(c_in**2 * var_x, torch.ones_like(var_x), **EXACT)
    var_target = ((1 - c_skip * A64) ** 2 * SD**2 + c_skip**2 * S64**2) / c_out**2
    assert torch.allclose(var_target, torch.ones_like(var_target), **EXACT)


@pytest.mark.parametrize(
    "precond", [EDMPrecond(SD), Eps(SD), V(SD), X0(SD)], ids=lambda p: type(p).__name__
)
def test_ideal_network_output_recovers_x0(precond):
    """Each parameterisation's ideal F (z, v = αz − σx0, x0, EDM target) gives D = x0 exactly."""
    torch.manual_seed(0)
    x0, z = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    x_t = A64 * x0 + S64 * z
    c_skip, c_out, _ = precond(A64, S64)
    target = {"Eps": z, "V": A64 * z - S64 * x0, "X0": x0}.get(type(precond).__name__)
    if target is None:
        target = (x0 - c_skip * x_t) / c_out
    assert torch.allclose(c_skip * x_t + c_out * target, x0, **EXACT)


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, noise_cond, cond=None):
        self.seen = x
        return torch.full_like(x, self.value)


def test_denoiser_applies_coefficients():
    net = _Const(0.25)
    d = Denoiser(net, EDMPrecond(SD), Identity())
    st = State(t=torch.rand(4), alpha=alpha, sigma=sigma, noise_cond=torch.zeros(4))
    x = torch.randn(4, 6)
    c_skip, c_out, c_in = EDMPrecond(SD)(alpha, sigma)
    assert torch.allclose(d(x, st), c_skip * x + c_out * 0.25)
    assert torch.allclose(net.seen, c_in * x)


def test_sigma_data_must_be_positive():
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(0)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)

    def forward(self, x, noise_cond, cond=None):
        self.out = self.lin(x)
        return self.out


def test_only_the_backbone_runs_under_autocast():
    net = _Linear()
    d = Denoiser(net, EDMPrecond(SD), Identity())
    st = State(t=torch.rand(4), alpha=alpha, sigma=sigma, noise_cond=torch.zeros(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(torch.randn(4, 6), st)
    assert net.out.dtype == torch.bfloat16 and out.dtype == torch.float32


def test_per_component_sigma_data_is_edm_per_component():
    """A tensor σ_d gives, component by component, the scalar-σ_d coefficients."""
    sd = torch.tensor([0.02, 0.1, 0.5, 1.0, 3.0, 8.0], dtype=torch.float64)
    per_component = EDMPrecond(SD)(A64, S64, sd)
    for i, s in enumerate(sd.tolist()):
        scalar = EDMPrecond(s)(A64, S64)
        for got, want in zip(per_component, scalar):
            assert torch.allclose(got[:, i], want[:, 0], **EXACT)


def test_per_component_edm_is_the_gaussian_posterior():
    """x0_i ~ N(0, s_i²): c_skip x_t = E[x0 | x_t] (Wiener filter) and c_out² = Var[x0 | x_t]."""
    s = torch.tensor([0.02, 0.1, 0.5, 1.0, 3.0, 8.0], dtype=torch.float64)
    c_skip, c_out, _ = EDMPrecond(SD)(A64, S64, s)
    precision = 1 / s**2 + A64**2 / S64**2  # posterior precision of x0_i given x_t,i
    assert torch.allclose(c_skip, (A64 / S64**2) / precision, **EXACT)
    assert torch.allclose(c_out**2, 1 / precision, **EXACT)


def test_denoiser_uses_its_per_component_sigma_data():
    net = _Const(0.25)
    sd = torch.tensor([0.02, 0.1, 0.5, 1.0, 3.0, 8.0])
    d = Denoiser(net, EDMPrecond(SD, per_component=True), Identity(), sigma_data=sd)
    st = State(t=torch.rand(4), alpha=alpha, sigma=sigma, noise_cond=torch.zeros(4))
    x = torch.randn(4, 6)
    c_skip, c_out, c_in = EDMPrecond(SD)(alpha, sigma, sd)
    assert torch.allclose(d(x, st), c_skip * x + c_out * 0.25)
    assert torch.allclose(net.seen, c_in * x)
    assert torch.equal(d.state_dict()["sigma_data"], sd)  # saved with the weights
