"""Cascaded Diffusion parts (diffusion_lab/cascade/): the low-resolution condition with noise
augmentation, the channel-concatenating backbone, the pipeline's chain checks, and the build-time
checks of lowres=superres."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from diffusion_lab.allowlist import ForeignTargetError, check_stored_config
from diffusion_lab.backbones.unet import UNet
from diffusion_lab.build import build, build_module
from diffusion_lab.cascade.concat import ConcatCondition
from diffusion_lab.cascade.lowres import LowResCondition
from diffusion_lab.cascade.pipeline import check_chain, sample_cascade
from diffusion_lab.sampling import generate
from diffusion_lab.values import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["backbone.model_channels=8", "backbone.attn_resolutions=[]", "sampler.num_steps=2"]


def lowres(**kw) -> LowResCondition:
    return LowResCondition(**{"low_size": 4, "image_size": 8, "channels": 2, **kw})


def test_condition_shape_and_level_plane():
    lr = lowres()
    z = torch.randn(3, 2, 4, 4)
    s = torch.tensor([0.0, 0.25, 0.5])
    cond = lr.condition(z, s, torch.Generator().manual_seed(0))
    assert cond.shape == (3, 3, 8, 8)
    for i in range(3):  # the last channel is the level s, constant over the image
        assert torch.equal(cond[i, -1], torch.full((8, 8), float(s[i])))
    scalar = lr.condition(z, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(scalar[:, -1], torch.full((3, 8, 8), 0.5))


def test_level_zero_is_the_exact_upsampled_image():
    lr = lowres()
    z = torch.randn(2, 2, 4, 4)
    cond = lr.condition(z, 0.0, torch.Generator().manual_seed(1))
    expected = F.interpolate(z, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.equal(cond[:, :2], expected)


def test_augmentation_adds_noise_of_std_s_per_sample():
    lr = lowres()
    z = torch.randn(2, 2, 4, 4).repeat(5000, 1, 1, 1)  # 10000 samples, 320000 values
    s = torch.tensor([0.0, 0.3]).repeat(5000)
    added = lr.augment(z, s, torch.Generator().manual_seed(2)) - z
    assert torch.equal(added[s == 0], torch.zeros_like(added[s == 0]))
    noise = added[s > 0]
    # n = 160000 values: the std estimate's standard error is 0.3 / sqrt(2n) ≈ 5e-4
    assert abs(float(noise.std()) - 0.3) < 3e-3
    assert abs(float(noise.mean())) < 3e-3  # standard error 0.3 / sqrt(n) ≈ 7.5e-4


def test_downsample_of_a_constant_image_is_that_constant():
    lr = LowResCondition(low_size=8, image_size=16, channels=1)
    x = torch.full((2, 1, 16, 16), -0.37)
    torch.testing.assert_close(lr.downsample(x), torch.full((2, 1, 8, 8), -0.37))
    # and a real image is averaged, not point-sampled: the 2x2 mean of a checkerboard
    board = (torch.arange(16)[:, None] + torch.arange(16)).remainder(2).float()[None, None]
    assert float(lr.downsample(board).std()) < 0.2 * float(board.std())


def test_training_levels_lie_in_range_and_follow_the_generator():
    lr = lowres(aug_max=0.4)
    x0 = torch.randn(256, 2, 8, 8)
    a = lr.training_condition(x0, torch.Generator().manual_seed(3))
    b = lr.training_condition(x0, torch.Generator().manual_seed(3))
    c = lr.training_condition(x0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    levels = a[:, -1, 0, 0]
    assert 0 <= float(levels.min()) and float(levels.max()) <= 0.4
    assert float(levels.max()) > 0.35 and float(levels.min()) < 0.05  # spread over U[0, 0.4]


def test_previous_stage_output_is_clipped_and_optionally_resampled():
    x = torch.linspace(-3, 3, 2 * 2 * 4 * 4).reshape(2, 2, 4, 4)
    assert torch.equal(lowres().from_previous_stage(x), x.clamp(-1, 1))
    lr = lowres(resample_base=True)
    assert torch.equal(lr.from_previous_stage(x), lr.downsample(lr.upsample(x.clamp(-1, 1))))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"low_size": 8}, "low_size=8 must be"),
        ({"low_size": 3}, "not a multiple"),
        ({"aug_max": -0.1}, "must be >= 0"),
    ],
)
def test_bad_levels_and_sizes_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        lowres(**kw)


def test_condition_refuses_the_wrong_low_resolution_shape():
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\); this stage takes \(2, 4, 4\)"):
        lowres().condition(torch.zeros(1, 2, 8, 8), 0.1)


def test_concat_wrapper_feeds_x_and_cond_as_channels():
    torch.manual_seed(0)
    net = UNet(
        in_channels=2 * 1 + 1,
        out_channels=1,
        image_size=8,
        model_channels=8,
        channel_mult=[1, 2],
        attn_resolutions=[],
        dropout=0.0,
    )
    torch.nn.init.normal_(net.conv_out.weight)  # zero-initialised output: make it depend on input
    wrapped = ConcatCondition(net).eval()
    x, cond, sigma = torch.randn(2, 1, 8, 8), torch.randn(2, 2, 8, 8), torch.rand(2)
    out = wrapped(x, sigma, cond)
    assert out.shape == x.shape
    assert torch.equal(out, net(torch.cat([x, cond], 1), sigma))
    assert not torch.allclose(out, wrapped(x, sigma, cond + 1), atol=1e-3)  # cond matters
    with pytest.raises(ValueError, match="needs its low-resolution image"):
        wrapped(x, sigma, None)
    with pytest.raises(ValueError, match="does not match x"):
        wrapped(x, sigma, cond[:1])


def _stage(data_shape, lr=None):
    return SimpleNamespace(lowres=lr, process=SimpleNamespace(data_shape=data_shape))


def test_chain_checks_every_stage_takes_the_previous_output():
    base = _stage((1, 8, 8))
    sr1 = _stage((1, 16, 16), LowResCondition(low_size=8, image_size=16, channels=1))
    sr2 = _stage((1, 32, 32), LowResCondition(low_size=16, image_size=32, channels=1))
    check_chain(base, [sr1, sr2])  # 8 -> 16 -> 32
    with pytest.raises(ConfigError) as err:
        check_chain(base, [sr2], ["ckpt_path=b.ckpt", "superres[0]=s.ckpt"])
    message = str(err.value)
    assert "superres[0]=s.ckpt takes low-resolution images of shape (1, 16, 16)" in message
    assert "ckpt_path=b.ckpt generates (1, 8, 8)" in message and "\n" not in message
    rgb = _stage((3, 16, 16), LowResCondition(low_size=8, image_size=16, channels=3))
    with pytest.raises(ConfigError, match="on 1-channel data"):
        check_chain(base, [rgb])
    with pytest.raises(ConfigError, match="is a super-resolution model"):
        check_chain(sr1, [sr2])
    with pytest.raises(ConfigError, match="is not a super-resolution model"):
        check_chain(base, [base])


def test_build_wires_a_super_resolution_stage(make_cfg):
    parts = build(make_cfg("experiment=cascade_sr_digits", *TINY))
    backbone = parts.denoiser.backbone
    assert isinstance(backbone, ConcatCondition) and isinstance(parts.lowres, LowResCondition)
    assert backbone.net.conv_in.in_channels == 3 and backbone.net.conv_out.out_channels == 1
    assert parts.lowres.low_shape == (1, 8, 8) and parts.process.data_shape == (1, 16, 16)
    plain = build(make_cfg(*TINY))
    assert plain.lowres is None and isinstance(plain.denoiser.backbone, UNet)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lowres.low_size=5"], "lowres=superres: image_size=16 is not a multiple of low_size=5"),
        (["lowres.low_size=16"], "lowres=superres: low_size=16 must be"),
        (["conditional=true", "backbone.num_classes=10"], "combining it with conditional=true"),
        (["evaluation.metrics=[fid]"], "set evaluation.metrics=[]"),
        (["lowres.channels=3"], "set up for 3-channel 16-pixel images"),
    ],
)
def test_build_refuses_what_a_stage_cannot_do(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        build(make_cfg("experiment=cascade_sr_digits", *TINY, *overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_build_refuses_a_stage_on_non_image_data(make_cfg):
    with pytest.raises(ConfigError, match="lowres=superres super-resolves images; dataset=toy2d"):
        build(make_cfg("lowres=superres", "dataset=toy2d", "backbone=mlp"))


def test_cascade_samples_every_stage_in_order(make_cfg):
    base_cfg = make_cfg("experiment=cascade_base_digits", *TINY)
    sr_cfg = make_cfg("experiment=cascade_sr_digits", *TINY)
    base, sr = (build_module(c, build(c)).eval() for c in (base_cfg, sr_cfg))
    seen = []
    result = sample_cascade(base, [sr], 3, seed=5, on_stage=lambda k, x, s: seen.append((k, x, s)))
    assert [tuple(x.shape) for x in result.images] == [(3, 1, 8, 8), (3, 1, 16, 16)]
    assert result.nfe == [2, 2]  # dpmpp: one call per step
    assert [k for k, _, _ in seen] == [0, 1] and seen[0][1] is result.images[0]
    assert 0 < result.time_to_preview < result.total_seconds
    again = sample_cascade(base, [sr], 3, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(result.images, again.images))
    # the stage is conditioned on the base's output at its level: another level, another image
    # (conv_out is zero at initialisation, so give the untrained network an output first)
    torch.nn.init.normal_(sr.ema.backbone.net.conv_out.weight, std=0.1)
    one, other = (sample_cascade(base, [sr], 3, seed=5, aug_levels=[s]) for s in (0.1, 0.4))
    assert torch.equal(other.images[0], one.images[0])
    assert not torch.allclose(other.images[1], one.images[1], atol=1e-3)


def test_generate_takes_an_image_condition_but_not_guidance_with_it():
    class Echo(torch.nn.Module):  # D(x; cond) = the condition's first channel
        def forward(self, x, state, cond=None):
            return cond[:, :1]

    process = SimpleNamespace(has_prior=True, prior=lambda n, **kw: torch.zeros(n, 1, 4, 4))
    cond = torch.randn(2, 2, 4, 4)

    def one_step(denoiser, process, x, cond=None, **kw):
        return denoiser(x, None, cond)

    x, nfe = generate(Echo(), process, one_step, 2, cond=cond)
    assert torch.equal(x, cond[:, :1]) and nfe == 1
    with pytest.raises(ValueError, match="guidance needs class labels"):
        generate(Echo(), process, one_step, 2, cond=cond, guidance=2.0)
    with pytest.raises(ValueError, match="must hold 2 images"):
        generate(Echo(), process, one_step, 2, cond=cond[:1])


def test_a_stored_lowres_node_is_checked_against_the_allowlist():
    ok = {"lowres": {"_target_": "diffusion_lab.cascade.lowres.LowResCondition", "low_size": 8}}
    check_stored_config(ok)
    crafted = {"lowres": {"_target_": "pathlib.Path.touch", "_args_": ["/tmp/x"]}}
    with pytest.raises(ForeignTargetError, match="lowres._target_=pathlib.Path.touch"):
        check_stored_config(crafted)
    elsewhere = {"dataset": {"_target_": "diffusion_lab.cascade.lowres.LowResCondition"}}
    with pytest.raises(ForeignTargetError, match="group `dataset`"):
        check_stored_config(elsewhere)
