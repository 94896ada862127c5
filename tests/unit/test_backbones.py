"""Backbones: shapes, zero-init output, wiring of noise and label embeddings, config errors."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import ListConfig, OmegaConf

from diffusion_lab.backbones import MLP, NoiseEmbedding, UNet

CONFIGS = Path(__file__).parents[2] / "configs" / "backbone"


def small_unet(**kwargs) -> UNet:
    args = dict(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
    return UNet(**(args | kwargs))


def inputs(shape, num_classes=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    noise_cond = torch.empty(shape[0]).uniform_(-3, 3, generator=g)
    cond = None if num_classes is None else torch.randint(num_classes + 1, (shape[0],), generator=g)
    return x, noise_cond, cond


def one_step(model, x, noise_cond, cond=None):
    """One Adam step towards a random target, so the zero-initialised output layer moves."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = (model(x, noise_cond, cond) - torch.randn_like(x)).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


BACKBONES = {
    "unet": (lambda **kw: small_unet(in_channels=3, image_size=8, **kw), (4, 3, 8, 8)),
    "mlp": (lambda **kw: MLP(dim=2, hidden=32, depth=2, emb_dim=16, **kw), (8, 2)),
}


@pytest.mark.parametrize(
    "batch, channels, size, out_channels, kwargs",
    [
        (1, 1, 16, None, dict(attn_resolutions=(8,))),
        (5, 3, 8, None, {}),
        (2, 1, 16, 2, dict(channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8, 4))),
        (3, 4, 32, None, dict(channel_mult=[1, 1, 2, 2], attn_resolutions=[])),
    ],
)
def test_unet_output_shape(batch, channels, size, out_channels, kwargs):
    model = small_unet(in_channels=channels, out_channels=out_channels, image_size=size, **kwargs)
    x, noise_cond, _ = inputs((batch, channels, size, size))
    out = model(x, noise_cond)
    assert out.shape == (batch, out_channels or channels, size, size)


def test_unet_non_square_input():
    x, noise_cond, _ = inputs((2, 1, 16, 8))
    assert small_unet(image_size=16, attn_resolutions=(8,))(x, noise_cond).shape == x.shape


@pytest.mark.parametrize("batch, dim", [(1, 2), (7, 2), (3, 5)])
def test_mlp_output_shape(batch, dim):
    x, noise_cond, _ = inputs((batch, dim))
    assert MLP(dim=dim, hidden=32, depth=2, emb_dim=16)(x, noise_cond).shape == x.shape


@pytest.mark.parametrize("name", BACKBONES)
def test_output_is_exactly_zero_at_init(name):
    build, shape = BACKBONES[name]
    x, noise_cond, _ = inputs(shape)
    assert torch.equal(build()(x, noise_cond), torch.zeros_like(x))


@pytest.mark.parametrize("name", BACKBONES)
def test_noise_cond_changes_output_after_one_step(name):
    build, shape = BACKBONES[name]
    model = build()
    x, noise_cond, _ = inputs(shape)
    one_step(model, x, noise_cond)
    model.eval()
    with torch.no_grad():
        low, high = (
            model(x, torch.full_like(noise_cond, -1.0)),
            model(x, torch.full_like(noise_cond, 1.0)),
        )
    assert low.abs().sum() > 0
    assert not torch.allclose(low, high)


@pytest.mark.parametrize("name", BACKBONES)
def test_class_labels_change_output_and_null_label_runs(name):
    build, shape = BACKBONES[name]
    model = build(num_classes=3)
    x, noise_cond, cond = inputs(shape, num_classes=3)
    cond[0] = 3  # the null label
    one_step(model, x, noise_cond, cond)
    model.eval()
    with torch.no_grad():
        out = {c: model(x, noise_cond, torch.full_like(cond, c)) for c in range(4)}
        unconditional = model(x, noise_cond)  # no labels = the null label
    assert out[0].shape == x.shape
    assert not torch.allclose(out[0], out[1])
    assert torch.equal(unconditional, out[3])


@pytest.mark.parametrize("name", BACKBONES)
def test_labels_without_num_classes_raise(name):
    build, shape = BACKBONES[name]
    x, noise_cond, _ = inputs(shape)
    with pytest.raises(ValueError, match="backbone.num_classes"):
        build()(x, noise_cond, torch.zeros(shape[0], dtype=torch.long))


@pytest.mark.parametrize("name", BACKBONES)
def test_gradient_reaches_every_parameter(name):
    build, shape = BACKBONES[name]
    model = build(num_classes=3)
    x, noise_cond, cond = inputs(shape, num_classes=3)
    one_step(model, x, noise_cond, cond)
    model(x, noise_cond, cond).square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", BACKBONES)
def test_runs_under_cpu_bf16_autocast(name):
    build, shape = BACKBONES[name]
    model = build()
    x, noise_cond, _ = inputs(shape)
    one_step(model, x, noise_cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, noise_cond)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert torch.isfinite(out.float()).all()


def test_invalid_image_size_names_the_options():
    with pytest.raises(
        ValueError, match=r"backbone\.image_size=12.*backbone\.channel_mult.*multiple of 8"
    ):
        UNet(image_size=12, channel_mult=(1, 2, 2, 2))
    assert (
        UNet(
            image_size=12, channel_mult=(1, 2, 2), attn_resolutions=(6,), model_channels=8
        ).downsampling_factor
        == 4
    )


def test_unreachable_attention_resolution_warns():
    with pytest.warns(UserWarning, match="attn_resolutions"):
        small_unet(image_size=28, attn_resolutions=(8,))


def test_noise_cond_must_be_one_value_per_sample():
    x, _, _ = inputs((2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        small_unet(image_size=8)(x, torch.zeros(2, 1))


def test_fourier_frequencies_are_seeded_not_global():
    torch.manual_seed(1)
    a = NoiseEmbedding(8)
    torch.manual_seed(2)
    b = NoiseEmbedding(8)
    assert torch.equal(a.fourier.freqs, b.fourier.freqs)
    assert not torch.equal(a.fourier.freqs, NoiseEmbedding(8, seed=1).fourier.freqs)


def test_unet_accepts_listconfig():
    model = small_unet(
        image_size=8, channel_mult=ListConfig([1, 2]), attn_resolutions=ListConfig([4])
    )
    x, noise_cond, _ = inputs((2, 1, 8, 8))
    assert model(x, noise_cond).shape == x.shape


@pytest.mark.parametrize(
    "name, dataset, cls",
    [("unet", dict(channels=1, image_size=16), UNet), ("mlp", dict(dim=2), MLP)],
)
def test_yaml_instantiates(name, dataset, cls):
    cfg = OmegaConf.create(
        {"dataset": dataset, "backbone": OmegaConf.load(CONFIGS / f"{name}.yaml")}
    )
    assert isinstance(instantiate(cfg.backbone), cls)
