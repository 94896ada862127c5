"""Cold Diffusion: operators, GMM prior, samplers (Alg. 1-2) and the restoration objective."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.functional as TF
from hydra.utils import instantiate
from omegaconf import OmegaConf

from diffusion_lab.checkpoint import adopt_fitted_shapes
from diffusion_lab.degradations import ColdBlur, Pixelate, Snow
from diffusion_lab.objectives import time as times
from diffusion_lab.objectives.cold import Cold
from diffusion_lab.priors import GaussianMixturePrior
from diffusion_lab.process import ForwardProcess
from diffusion_lab.samplers import cold, grids
from tests.numerics import f32_tol

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHAPE = (2, 16, 16)
OPERATORS = {
    "blur": lambda: ColdBlur(num_levels=10, kernel_std=0.3, to_mean_last_step=False),
    "blur_to_mean": lambda: ColdBlur(num_levels=10, kernel_std=0.3, to_mean_last_step=True),
    "pixelate": lambda: Pixelate(num_levels=6, upsample="bicubic"),
    "snow": lambda: Snow(num_levels=8),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=4, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _statistics(n=64):
    images = _images(n, seed=1)
    return SimpleNamespace(channel_means=images.mean((2, 3)), images=images)


def _t(value, n=4):
    return torch.full((n,), float(value))


@pytest.mark.parametrize("sampler", [cold.cold_naive, cold.cold])
@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_oracle_restorer_recovers_x0(make, sampler):
    """R = the true x0: both algorithms return x0 from D(x0, 1); Alg. 2 visits D(x0, s) exactly."""
    deg = make()
    process, x0 = ForwardProcess(deg, None, SHAPE), _images()
    trajectory = []
    x = sampler(
        lambda x, state, cond=None: x0,
        process,
        process.degrade(x0, _t(1)),
        num_steps=deg.num_levels,
        grid=grids.uniform,
        callback=trajectory.append,
    )
    assert torch.allclose(x, x0, atol=1e-5)
    for step in trajectory:
        s = (deg.num_levels - 1 - step["i"]) / deg.num_levels
        assert torch.allclose(step["x"], process.degrade(x0, _t(s)), atol=1e-5)


def test_improved_sampler_cancels_a_constant_error_naive_does_not():
    """Paper §3.3: circular blur maps a constant shift e to itself, so Alg. 2 removes it."""
    process, x0 = ForwardProcess(ColdBlur(num_levels=10), None, SHAPE), _images()
    x_T, bad = process.degrade(x0, _t(1)), (lambda x, state, cond=None: x0 + 0.1)
    run = dict(num_steps=10, grid=grids.uniform)
    # derived (process.degrade is float32 only): D(x0 + 0.1) − D(x0) − 0.1 rounds over
    # 10 levels × 11² taps, plus 4 additions per step, on values <= 1.1
    tol = f32_tol(10 * 11**2 + 4 * 10, 1.1)
    assert torch.allclose(cold.cold(bad, process, x_T, **run), x0, atol=tol)
    assert torch.allclose(cold.cold_naive(bad, process, x_T, **run), x0 + 0.1, atol=1e-5)


@pytest.mark.parametrize("routine", ["constant", "incremental", "exponential"])
def test_cumulative_blur_matches_repeated_torchvision_blur(routine):
    deg = ColdBlur(
        num_levels=5,
        kernel_size=5,
        kernel_std=0.4,
        blur_routine=routine,
        padding="reflect",
        to_mean_last_step=False,
    )
    stds = {"constant": [0.4] * 5, "incremental": [0.4 * k for k in range(1, 6)]}
    stds["exponential"] = [math.exp(0.4 * (k - 1)) for k in range(1, 6)]
    # float64: only our float32 kernel buffer rounds (<= u per level, the same on every CPU)
    x0 = _images(2).double()
    for k in range(6):
        ref = x0
        for std in stds[routine][:k]:
            ref = TF.gaussian_blur(ref, [5, 5], [std, std])
        assert torch.allclose(deg.degrade(x0, _t(k / 5, 2)), ref, atol=1e-5)


def test_levels_are_quantised_and_blur_is_monotone():
    deg = ColdBlur(num_levels=8, kernel_std=0.3, to_mean_last_step=False)
    t = torch.tensor([0.0, 1e-3, 0.125, 0.13, 0.5, 1.0, 1.5])
    assert deg.level(t).tolist() == [0, 1, 1, 2, 4, 8, 8]
    grid_t = grids.uniform(None, 8)  # float32 points i/T land on level i
    assert deg.level(grid_t).tolist() == list(range(8, -1, -1))
    x0 = _images()
    assert torch.equal(deg.degrade(x0, _t(0)), x0)

    def high_freq(x):  # energy of finite differences
        return (x.diff(dim=-1) ** 2).sum() + (x.diff(dim=-2) ** 2).sum()

    energies = [high_freq(deg.degrade(x0, _t(k / 8))).item() for k in range(9)]
    assert all(a > b for a, b in zip(energies, energies[1:]))


def test_circular_blur_preserves_channel_means_and_ends_in_the_mean():
    # float64: only the float32 kernel buffers round (kernel sums 1 ± u, the same on every CPU)
    x0 = _images().double()
    for to_mean in (False, True):
        deg = ColdBlur(num_levels=6, kernel_std=1.0, to_mean_last_step=to_mean)
        for k in range(7):
            x = deg.degrade(x0, _t(k / 6))
            assert torch.allclose(x.mean((2, 3)), x0.mean((2, 3)), atol=1e-5)
    last = ColdBlur(num_levels=6, to_mean_last_step=True).degrade(x0, _t(1))
    assert torch.allclose(last, x0.mean((2, 3), keepdim=True).expand_as(last), atol=1e-6)


def test_mixed_levels_in_one_batch_match_single_level_calls():
    # float64: batched and per-sample calls may round differently in float32, not in double
    x0, t = _images().double(), torch.tensor([0.0, 0.3, 0.7, 1.0])
    for make in OPERATORS.values():
        deg = make()
        rows = [deg.degrade(x0[i : i + 1], t[i : i + 1]) for i in range(4)]
        assert torch.allclose(deg.degrade(x0, t), torch.cat(rows), rtol=0, atol=1e-12)


def test_pixelate_sizes_and_coarsest_level():
    deg = Pixelate(num_levels=8, min_size=4)
    sizes = [deg.size(k, (16, 16))[0] for k in range(9)]
    assert sizes[0] == 16 and sizes[-1] == 4 and sizes == sorted(sizes, reverse=True)
    x = Pixelate(num_levels=8, min_size=4, upsample="nearest").degrade(_images(), _t(1))
    blocks = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 4, 4, 4, 4): constant 4×4 blocks
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))


def test_snow_is_deterministic_monotone_and_identity_at_level_0():
    x0 = _images()
    a, b = Snow(num_levels=8, seed=3), Snow(num_levels=8, seed=3)
    assert torch.equal(a.degrade(x0, _t(0.5)), b.degrade(x0, _t(0.5)))
    assert torch.equal(a.degrade(x0, _t(0.5)), a.degrade(x0, _t(0.5)))
    assert not torch.equal(a.degrade(x0, _t(1)), Snow(num_levels=8, seed=4).degrade(x0, _t(1)))
    assert torch.equal(a.degrade(x0, _t(0)), x0)
    masks = [a.mask(_t(k / 8, 1), (16, 16)) for k in range(9)]
    assert all((m1 <= m2).all() for m1, m2 in zip(masks, masks[1:]))
    assert 0.2 < masks[-1].mean() <= 1 and masks[0].max() == 0


def test_gmm_recovers_a_two_component_mixture_and_samples_are_seeded():
    g = torch.Generator().manual_seed(0)
    k = (torch.rand(3000, generator=g) < 0.3).long()
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])  # weights 0.7, 0.3
    data = means[k] + 0.4 * torch.randn(3000, 2, generator=g)
    prior = GaussianMixturePrior().fit(data, n_components=2, seed=0)
    order = prior.means[:, 0].argsort(descending=True)
    assert torch.allclose(prior.weights[order], torch.tensor([0.3, 0.7]), atol=0.03)
    assert torch.allclose(prior.means[order], means.flip(0), atol=0.1)
    draw = prior.sample(4000, torch.Generator().manual_seed(5))
    assert draw.shape == (4000, 2)
    assert (draw[:, 0] > 0).float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(draw, prior.sample(4000, torch.Generator().manual_seed(5)))
    loaded = GaussianMixturePrior()  # unfitted: takes its sizes from the checkpoint
    assert adopt_fitted_shapes(loaded, prior.state_dict()) == ["weights", "means", "scale_tril"]
    loaded.load_state_dict(prior.state_dict())
    same_seed = [m.sample(8, torch.Generator().manual_seed(1)) for m in (loaded, prior)]
    assert torch.equal(*same_seed)
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixturePrior().sample(2)


def test_priors_have_the_right_shape_and_live_in_the_checkpoint():
    for deg in (ColdBlur(num_levels=4), Pixelate(num_levels=4)):
        process = ForwardProcess(deg, None, SHAPE).setup(_statistics())
        x = process.prior(5, generator=torch.Generator().manual_seed(0))
        assert x.shape == (5, *SHAPE) and torch.isfinite(x).all()
        fresh = ForwardProcess(type(deg)(num_levels=4), None, SHAPE).setup(None)
        adopt_fitted_shapes(fresh, process.state_dict())
        fresh.load_state_dict(process.state_dict())
        assert torch.equal(fresh.prior(5, generator=torch.Generator().manual_seed(0)), x)
    spread = x - x.mean((2, 3), keepdim=True)  # pixelate: 4×4 coarse pixels vary over the image
    assert spread.abs().max() > 0.01
    blur = ForwardProcess(ColdBlur(num_levels=4, prior_noise=0.0), None, SHAPE)
    x = blur.setup(_statistics()).prior(3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, x[..., :1, :1].expand_as(x))  # constant per channel
    with pytest.raises(NotImplementedError, match="init_image"):
        ForwardProcess(Snow(), None, SHAPE).prior(2)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_cold_objective_matches_hand_computation(norm):
    process, x0 = ForwardProcess(ColdBlur(num_levels=5), None, SHAPE), _images()
    x0_hat = x0 + torch.linspace(-0.5, 0.5, 16)
    loss = Cold(times.UniformTime(), norm=norm)(lambda x, s, c=None: x0_hat, process, x0, t=_t(0.5))
    diff = x0_hat - x0
    expected = (diff.abs() if norm == "l1" else diff**2).flatten(1).mean(1)
    assert loss.shape == (4,) and torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="l1"):
        Cold(times.UniformTime(), norm="huber")


def test_forward_process_round_trip():
    process = ForwardProcess(ColdBlur(num_levels=5, noise=0.01), None, SHAPE)
    x0, t, z = _images(), torch.tensor([0.0, 0.2, 0.6, 1.0]), torch.randn(4, *SHAPE)
    x_t, noise, state = process.sample(x0, t, z)
    assert torch.equal(noise, z)
    assert torch.allclose(x_t, process.degrade(x0, t) + 0.01 * z)
    assert torch.equal(state.alpha, torch.ones(4, 1, 1, 1))
    assert torch.allclose(state.sigma, torch.full((4, 1, 1, 1), 0.01))
    assert torch.equal(state.noise_cond, t)
    assert not (process.linear or process.full_rank_noise or process.isotropic)


def test_bad_names_raise_value_errors_listing_the_choices():
    with pytest.raises(ValueError, match="incremental"):
        ColdBlur(blur_routine="gaussian")
    with pytest.raises(ValueError, match="circular"):
        ColdBlur(padding="zeros")
    with pytest.raises(ValueError, match="bicubic"):
        Pixelate(upsample="bilinear")


def _node(path):
    cfg = OmegaConf.load(CONFIGS / path)
    cfg.pop("defaults", None)
    return cfg


@pytest.mark.parametrize("name", ["cold_blur", "pixelate", "snow"])
def test_yaml_degradations_instantiate(name):
    assert OmegaConf.load(CONFIGS / "degradation" / f"{name}.yaml").defaults
    deg = instantiate(_node(f"degradation/{name}.yaml").degradation)
    assert deg.num_levels >= 1 and not deg.linear


@pytest.mark.parametrize("name", ["cold", "cold_naive"])
def test_yaml_samplers_and_objective_instantiate(name):
    sampler = _node(f"sampler/{name}.yaml")
    sampler.grid = _node("sampler/grid/uniform.yaml")
    cfg = OmegaConf.create({"degradation": {"num_levels": 7}, "sampler": sampler})
    fn = instantiate(cfg.sampler)
    assert fn.keywords["num_steps"] == 7 and not hasattr(fn.func, "requires")
    objective = _node("objective/cold.yaml")
    objective.time = _node("objective/time/uniform.yaml")
    assert instantiate(objective).norm == "l1"


@pytest.mark.parametrize("size", [(16, 16), (8, 12), (5, 5)])
def test_circular_blur_in_fourier_space_equals_repeated_convolution(size):
    """The FFT path (all levels at once) is the same operator as T depthwise circular convolutions,
    including kernels wider than the image (taps wrap around the torus)."""
    fast = ColdBlur(num_levels=12)
    fast.setup((2, *size), None)
    slow = ColdBlur(num_levels=12)  # not set up: falls back to the convolution loop
    x0 = torch.rand(6, 2, *size) * 2 - 1
    t = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
    reference = slow.degrade(x0.double(), t)  # the convolutions in float64
    # derived for the float32 FFT path: rfft2 + irfft2 (log2 HW rounding steps each) and the
    # complex64 transfer, on the channel's norm
    steps = 2 * math.ceil(math.log2(size[0] * size[1])) + 2
    tol = f32_tol(steps, x0.flatten(2).norm(dim=2).max())
    assert torch.allclose(fast.degrade(x0, t).double(), reference, rtol=0, atol=tol)
