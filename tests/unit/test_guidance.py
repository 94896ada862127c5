"""Classifier-free guidance (diffusion_lab/guidance.py) and label dropout, on a tiny randomly
initialised conditional U-Net: no training, exact identities."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from diffusion_lab.backbones.unet import UNet
from diffusion_lab.degradations import VariancePreserving
from diffusion_lab.degradations.blur import Blur
from diffusion_lab.denoiser import Denoiser
from diffusion_lab.guidance import (
    Guided,
    double_state,
    drop_labels,
    null_label_of,
    rescale_guidance,
    spread_labels,
)
from diffusion_lab.module import DiffusionModule, step_seed
from diffusion_lab.precond import EDMPrecond
from diffusion_lab.process import ForwardProcess, State
from diffusion_lab.sampling import CountCalls
from diffusion_lab.schedules import Cosine
from diffusion_lab.schedules.blur import GeometricBlur
from tests.numerics import f32_tol

SHAPE, NUM_CLASSES = (1, 8, 8), 10
SAMPLER_CONFIGS = sorted(
    p.stem for p in (Path(__file__).parents[2] / "configs" / "sampler").glob("*.yaml")
)


def conditional_unet(seed: int = 0) -> UNet:
    """Small channels, no dropout; every weight perturbed (the output conv starts at zero)."""
    torch.manual_seed(seed)
    net = UNet(1, None, 8, 16, (1, 2), 1, (4,), 0.0, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def denoiser_and_process(kind: str = "vp"):
    if kind == "blur":  # per-component α (B, 1, 8, 8), σ (B, 1, 1, 1), DCT basis
        process = ForwardProcess(Blur(), GeometricBlur(0.5, 4.0), SHAPE).setup(None)
        sigma_data = 0.5 / (1 + process.basis.frequencies_squared)  # per component, like build
    else:
        process, sigma_data = (
            ForwardProcess(VariancePreserving(), Cosine(), SHAPE).setup(None),
            None,
        )
    return Denoiser(conditional_unet(), EDMPrecond(0.5), process.basis, sigma_data), process


class Spy(torch.nn.Module):
    """Records the batch size and labels of every network call."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser, self.calls = denoiser, []
        self.backbone = denoiser.backbone

    def forward(self, x, state, cond=None):
        self.calls.append((x.shape[0], None if cond is None else cond.clone()))
        return self.denoiser(x, state, cond)


def net_tol(*outputs) -> float:
    """Derived bound on how a float32 denoiser output may change with the batch size (one doubled
    call against separate ones pick different kernels): this U-Net accumulates ≈ 4000 terms on its
    deepest path (3×3 convolutions over ≤ 64 channels, attention over 16 tokens, group norms),
    on values the size of its outputs. The Denoiser is float32 by design, so not float64."""
    return f32_tol(4000, max(o.abs().max().item() for o in outputs))


def inputs(process, batch: int = 4, t: float = 0.5):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((batch, *SHAPE), generator=gen)
    state = process.state(torch.full((batch,), t))
    return x, state, torch.tensor([3, 0, 7, 9][:batch])


@torch.no_grad()
def test_scale_zero_is_the_unconditional_model_and_one_the_conditional():
    den, process = denoiser_and_process()
    x, st, cond = inputs(process)
    uncond, cond_out = den(x, st), den(x, st, cond)
    assert not torch.allclose(uncond, cond_out, atol=1e-3)  # the labels matter in this network
    assert torch.equal(Guided(den, 0.0)(x, st, cond), uncond)  # cond None = the null label
    assert torch.equal(Guided(den, 1.0)(x, st, cond), cond_out)
    assert torch.equal(den(x, st, torch.full_like(cond, NUM_CLASSES)), uncond)
    # the doubled-batch path with w -> 0 and w -> 1 (rescale forces it at w = 0); derived
    # tolerance: (1 + 2w) × net_tol, plus the 1e-7 (c − u) of w = 1 + 1e-7
    tol = net_tol(uncond, cond_out)
    assert torch.allclose(Guided(den, 0.0, rescale=1e-30)(x, st, cond), uncond, rtol=0, atol=tol)
    near_one = 3 * tol + 1e-7 * (cond_out - uncond).abs().max().item()
    assert torch.allclose(Guided(den, 1.0 + 1e-7)(x, st, cond), cond_out, rtol=0, atol=near_one)


@torch.no_grad()
@pytest.mark.parametrize("kind", ["vp", "blur"])
@pytest.mark.parametrize("w", [0.5, 2.0, 4.0])
def test_one_doubled_call_equals_two_separate_calls(kind, w):
    den, process = denoiser_and_process(kind)
    x, st, cond = inputs(process, t=0.3)
    spy = Spy(den)
    guided = Guided(spy, w)(x, st, cond)
    assert [c[0] for c in spy.calls] == [8]  # one network call, doubled batch
    assert torch.equal(spy.calls[0][1], torch.tensor([3, 0, 7, 9] + [NUM_CLASSES] * 4))
    uncond, cond_out = den(x, st), den(x, st, cond)
    tol = (1 + 2 * w) * net_tol(uncond, cond_out)  # derived: u + w (c − u), each off by net_tol
    assert torch.allclose(guided, uncond + w * (cond_out - uncond), rtol=0, atol=tol)


def test_state_fields_are_doubled_along_the_batch():
    _, process = denoiser_and_process("blur")
    st = process.state(torch.tensor([0.1, 0.4, 0.9]))
    assert st.alpha.shape == (3, 1, 8, 8) and st.sigma.shape == (3, 1, 1, 1)  # per component
    both = double_state(st, 3)
    for name in ("t", "alpha", "sigma", "noise_cond"):
        value, doubled = getattr(st, name), getattr(both, name)
        assert doubled.shape == (6, *value.shape[1:])
        assert torch.equal(doubled[:3], value) and torch.equal(doubled[3:], value)
    # fields shared by the whole batch (leading dim 1) broadcast and stay as they are
    shared = State(t=st.t, alpha=st.alpha[:1], sigma=torch.tensor(0.5), noise_cond=st.noise_cond)
    both = double_state(shared, 3)
    assert both.alpha.shape == (1, 1, 8, 8) and both.sigma.ndim == 0 and both.t.shape == (6,)


@torch.no_grad()
def test_rescale():
    den, process = denoiser_and_process()
    x, st, cond = inputs(process, t=0.7)
    uncond, cond_out = den(x, st), den(x, st, cond)
    plain = uncond + 3 * (cond_out - uncond)
    tol = 7 * net_tol(uncond, cond_out)  # derived: (1 + 2w) × net_tol at w = 3
    assert torch.allclose(Guided(den, 3.0, rescale=0.0)(x, st, cond), plain, rtol=0, atol=tol)
    g = torch.randn(4, 1, 8, 8)
    assert rescale_guidance(g, cond_out, 0.0) is g  # φ = 0: a no-op
    full = Guided(den, 3.0, rescale=1.0)(x, st, cond)  # φ = 1: the conditional std per sample
    # derived: a std moves by at most the largest change of its 64 values (net_tol), plus the
    # float32 rounding of the two stds and the rescale (≈ 4 × 64 terms)
    std_tol = net_tol(uncond, cond_out) + f32_tol(4 * 64, full.abs().max())
    full_std, cond_std = full.std(dim=(1, 2, 3)), cond_out.std(dim=(1, 2, 3))
    assert torch.allclose(full_std, cond_std, rtol=0, atol=std_tol)
    half = Guided(den, 3.0, rescale=0.5)(x, st, cond)
    # derived: full and half share the doubled call; plain (separate calls) is off by 7 net_tol
    tol = 0.5 * tol + f32_tol(4 * 64, half.abs().max())
    assert torch.allclose(half, 0.5 * full + 0.5 * plain, rtol=0, atol=tol)
    with pytest.raises(ValueError, match="guidance_rescale"):
        Guided(den, 3.0, rescale=1.5)


@torch.no_grad()
def test_no_labels_is_a_plain_unconditional_call():
    den, process = denoiser_and_process()
    x, st, _ = inputs(process)
    spy = Spy(den)
    assert torch.equal(Guided(spy, 4.0)(x, st, None), den(x, st))
    assert spy.calls == [(4, None)]
    assert null_label_of(den) == NUM_CLASSES
    with pytest.raises(ValueError, match="class-conditional backbone"):
        null_label_of(Denoiser(torch.nn.Identity(), EDMPrecond(), process.basis))


@torch.no_grad()
@pytest.mark.parametrize("name", SAMPLER_CONFIGS)
def test_every_sampler_runs_guided_and_passes_the_labels(make_cfg, name):
    steps = [] if name == "adaptive" else ["sampler.num_steps=3"]  # adaptive: a tolerance
    sampler = instantiate(make_cfg(f"sampler={name}", *steps).sampler)
    den, process = denoiser_and_process()
    spy = Spy(den)
    counted = CountCalls(Guided(spy, 2.0))
    cond = torch.tensor([1, 5])
    x_T = process.prior(2, generator=torch.Generator().manual_seed(0))
    x = sampler(counted, process, x_T, cond=cond, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, *SHAPE) and torch.isfinite(x).all()
    assert counted.nfe == len(spy.calls) >= 3  # NFE = network calls
    for batch, labels in spy.calls:  # every call saw the labels, doubled with the null label
        assert batch == 4 and labels.tolist() == [1, 5, NUM_CLASSES, NUM_CLASSES]


def test_label_dropout_rate_and_determinism():
    y = torch.randint(0, NUM_CLASSES, (100_000,))
    dropped = drop_labels(y, 0.1, NUM_CLASSES, torch.Generator().manual_seed(0))
    rate = (dropped == NUM_CLASSES).float().mean().item()
    assert rate == pytest.approx(0.1, abs=0.005)  # 5 standard errors (0.00095)
    kept = dropped != NUM_CLASSES
    assert torch.equal(dropped[kept], y[kept])  # labels are dropped, never changed
    again = drop_labels(y, 0.1, NUM_CLASSES, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)
    other = drop_labels(y, 0.1, NUM_CLASSES, torch.Generator().manual_seed(1))
    assert not torch.equal(dropped, other)
    assert drop_labels(y, 0.0, NUM_CLASSES, torch.Generator()) is y


def _module(label_dropout: float, recorded: list):
    class Recorder(torch.nn.Module):
        def forward(self, denoiser, process, x0, cond):
            recorded.append((cond.clone(), torch.rand(3)))  # the labels and the t/noise stream
            return torch.zeros(x0.shape[0], requires_grad=True)

    den, process = denoiser_and_process()
    module = DiffusionModule(
        process,
        den,
        Recorder(),
        sampler=None,
        optimizer=None,
        seed=7,
        class_conditional=True,
        num_classes=NUM_CLASSES,
        label_dropout=label_dropout,
    )
    module.log = lambda *a, **k: None
    return module


def test_training_step_drops_labels_from_the_step_seed():
    recorded = []
    module = _module(0.3, recorded)
    batch = (torch.zeros(256, *SHAPE), torch.randint(0, NUM_CLASSES, (256,)))
    for step in (5, 5, 6):
        module._trainer = SimpleNamespace(
            accumulate_grad_batches=1, global_step=step, global_rank=0
        )
        torch.manual_seed(123 + step)  # whatever the global RNG held before does not matter
        module.training_step(batch, 0)
    (a, noise_a), (b, noise_b), (c, _) = recorded
    assert torch.equal(a, b) and torch.equal(noise_a, noise_b)  # same step: same mask (resume)
    assert not torch.equal(a, c)  # another step: another mask
    assert 0.2 < (a == NUM_CLASSES).float().mean().item() < 0.4
    kept = a != NUM_CLASSES
    assert torch.equal(a[kept], batch[1][kept])
    # the dropout draws come from their own stream: t and noise are those of a run without it
    plain = []
    module = _module(0.0, plain)
    module._trainer = SimpleNamespace(accumulate_grad_batches=1, global_step=5, global_rank=0)
    module.training_step(batch, 0)
    assert torch.equal(plain[0][0], batch[1]) and torch.equal(plain[0][1], noise_a)
    assert step_seed(7, 0, 5) != step_seed(7, 0, 5, stream=1)


def test_spread_labels():
    assert spread_labels("all", 20, 10).tolist() == [k for k in range(10) for _ in range(2)]
    assert spread_labels(3, 4, 10).tolist() == [3, 3, 3, 3]
    assert spread_labels([1, 7], 5, 10).tolist() == [1, 1, 1, 7, 7]
    for bad in (10, -1, "some", [], [1, "a"], True, 2.5):
        with pytest.raises(ValueError, match="class_label=.* is not valid"):
            spread_labels(bad, 4, 10)
