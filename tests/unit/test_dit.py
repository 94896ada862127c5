"""DiT backbone (Peebles & Xie 2023): shapes, adaLN-Zero init, labels, positional embedding, errors,
configs and the paper's model sizes."""

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from diffusion_lab.backbones import DiT
from diffusion_lab.backbones.dit import DiTBlock, sincos_pos_embed
from diffusion_lab.build import ConfigError, build

CONFIGS = Path(__file__).parents[2] / "configs" / "backbone"


def tiny_dit(**kwargs) -> DiT:
    args = dict(in_channels=1, image_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2)
    return DiT(**(args | kwargs))


def inputs(shape, num_classes=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    noise_cond = torch.empty(shape[0]).uniform_(-3, 3, generator=g)
    cond = None if num_classes is None else torch.randint(num_classes + 1, (shape[0],), generator=g)
    return x, noise_cond, cond


def train_steps(model, x, noise_cond, cond=None, steps=1):
    """Adam steps towards a fixed random target: the zero-initialised layers move."""
    target = torch.randn(x.shape[0], model.out_channels, *x.shape[2:])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = (model(x, noise_cond, cond) - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize(
    "batch, channels, size, patch, out_channels",
    [
        (2, 1, 16, 2, None),
        (3, 3, 8, 4, None),
        (1, 3, 12, 3, 6),
        (2, 4, 32, 2, None),
        (1, 2, 4, 1, 1),
    ],
)
def test_output_shape(batch, channels, size, patch, out_channels):
    model = tiny_dit(
        in_channels=channels, out_channels=out_channels, image_size=size, patch_size=patch
    )
    x, noise_cond, _ = inputs((batch, channels, size, size))
    assert model(x, noise_cond).shape == (batch, out_channels or channels, size, size)
    assert model.downsampling_factor == patch


def test_other_input_sizes_use_the_same_positional_formula():
    model = tiny_dit(image_size=8)
    x, noise_cond, _ = inputs((2, 1, 12, 6))
    assert model(x, noise_cond).shape == x.shape
    with pytest.raises(ValueError, match="patch_size 2"):
        model(*inputs((2, 1, 8, 7))[:2])


def test_output_is_zero_at_init_and_not_after_one_step():
    model = tiny_dit()
    x, noise_cond, _ = inputs((4, 1, 8, 8))
    assert torch.equal(model(x, noise_cond), torch.zeros_like(x))
    train_steps(model, x, noise_cond)
    with torch.no_grad():
        assert model(x, noise_cond).abs().sum() > 0


def test_noise_level_reaches_the_output_after_two_steps():
    """Step 1 moves only the final Linear (every other gradient passes through its zero weight);
    the conditioning enters through the final adaLN from step 2 on."""
    model = tiny_dit()
    x, noise_cond, _ = inputs((4, 1, 8, 8))
    train_steps(model, x, noise_cond, steps=2)
    model.eval()
    with torch.no_grad():
        low = model(x, torch.full_like(noise_cond, -1.0))
        high = model(x, torch.full_like(noise_cond, 1.0))
    assert not torch.allclose(low, high)


def test_every_block_is_the_identity_at_init():
    """adaLN-Zero: the modulation regresses gate α = 0, so x + α·F(x) = x for any x and c."""
    model = tiny_dit(depth=3)
    h, emb = torch.randn(2, 16, 32), torch.randn(2, 32)
    for block in model.blocks:
        assert torch.equal(block(h, emb), h)
    block = DiTBlock(hidden=32, heads=4, mlp_ratio=4.0, emb_dim=32, dropout=0.0)
    torch.nn.init.normal_(block.modulation.weight)  # non-zero gates: no longer the identity
    assert not torch.allclose(block(h, emb), h)


def test_labels_change_the_output_and_none_is_the_null_label():
    model = tiny_dit(num_classes=3)
    x, noise_cond, cond = inputs((4, 1, 8, 8), num_classes=3)
    train_steps(model, x, noise_cond, cond, steps=2)  # see the noise-level test
    with torch.no_grad():
        model.embedding.label.weight.normal_()  # labels far apart (init is N(0, 0.02²))
    model.eval()
    with torch.no_grad():
        out = {c: model(x, noise_cond, torch.full_like(cond, c)) for c in range(4)}
        unconditional = model(x, noise_cond)
    assert not torch.allclose(out[0], out[1])
    assert not torch.allclose(out[0], out[3])  # conditional vs the null label
    assert torch.equal(unconditional, out[3])
    assert model.num_classes == 3  # guidance finds the null label here


def test_labels_without_num_classes_raise():
    x, noise_cond, _ = inputs((2, 1, 8, 8))
    with pytest.raises(ValueError, match="backbone.num_classes"):
        tiny_dit()(x, noise_cond, torch.zeros(2, dtype=torch.long))


def test_gradient_reaches_every_parameter_after_a_few_steps():
    """Zero init blocks the gradient at first: step 1 moves the final layer, step 2 the gates,
    step 3 the rest. After that no parameter is dead."""
    model = tiny_dit(num_classes=3, dropout=0.0)
    x, noise_cond, cond = inputs((4, 1, 8, 8), num_classes=3)
    train_steps(model, x, noise_cond, cond, steps=3)
    model(x, noise_cond, cond).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_positional_embedding_is_fixed_deterministic_and_distinct():
    torch.manual_seed(1)
    a = tiny_dit(image_size=16)
    torch.manual_seed(2)
    b = tiny_dit(image_size=16)
    assert torch.equal(a.pos_embed, b.pos_embed)
    assert torch.equal(a.pos_embed, sincos_pos_embed(32, 8, 8))
    assert "pos_embed" not in dict(a.named_parameters()) and "pos_embed" not in a.state_dict()
    pos = a.pos_embed
    assert pos.shape == (64, 32)
    distance = torch.cdist(pos.double(), pos.double()) + torch.eye(64, dtype=torch.float64)
    assert distance.min() > 1e-3  # every patch position has its own embedding
    # position (row 0, col 0): sin 0 = 0 and cos 0 = 1 in both halves
    assert torch.equal(pos[0], torch.tensor(([0.0] * 8 + [1.0] * 8) * 2))
    # patch (row 1, col 2) = raster index 1 * 8 + 2; first half encodes the row, second the column
    omega = 1.0 / 10000 ** (torch.arange(8, dtype=torch.float64) / 8)
    row, col = (
        torch.cat([omega.sin(), omega.cos()]),
        torch.cat([(2 * omega).sin(), (2 * omega).cos()]),
    )
    assert torch.allclose(pos[10].double(), torch.cat([row, col]), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, pattern, valid",
    [
        (
            dict(image_size=15, patch_size=2),
            r"backbone\.image_size=15 must be divisible by backbone\.patch_size=2.*e\.g\. 1, 3, 5",
            dict(image_size=15, patch_size=3),
        ),
        (
            dict(hidden_size=100, num_heads=6),
            r"backbone\.hidden_size=100 must be divisible by backbone\.num_heads=6.*hidden_size=96",
            dict(hidden_size=96, num_heads=6),
        ),
        (
            dict(hidden_size=30, num_heads=2),
            r"backbone\.hidden_size=30 .*by 4 .*hidden_size=32",
            dict(hidden_size=32, num_heads=2),
        ),
        (dict(patch_size=0), r"backbone\.patch_size=0 must be an integer >= 1", {}),
    ],
)
def test_invalid_sizes_name_the_option_and_a_valid_value(kwargs, pattern, valid):
    with pytest.raises(ValueError, match=pattern):
        tiny_dit(**kwargs)
    tiny_dit(**valid)  # the suggested value works


def test_build_names_the_backbone_choice(make_cfg):
    with pytest.raises(ConfigError, match=r"backbone=dit: backbone\.image_size=16 .*patch_size=3"):
        build(make_cfg("backbone=dit", "backbone.patch_size=3"))


def test_runs_under_cpu_bf16_autocast():
    model = tiny_dit()
    x, noise_cond, _ = inputs((2, 1, 8, 8))
    train_steps(model, x, noise_cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, noise_cond)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()


def test_deepcopy_and_state_dict_round_trip():
    """The EMA copy is a deepcopy; checkpoints hold the state dict (no positional buffer)."""
    model = tiny_dit(num_classes=3)
    x, noise_cond, cond = inputs((2, 1, 8, 8), num_classes=3)
    train_steps(model, x, noise_cond, cond)
    fresh = tiny_dit(num_classes=3)
    fresh.load_state_dict(copy.deepcopy(model).state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(model(x, noise_cond, cond), fresh(x, noise_cond, cond))


def test_yaml_instantiates_with_dataset_interpolation():
    cfg = OmegaConf.create(
        {
            "dataset": dict(channels=1, image_size=16),
            "backbone": OmegaConf.load(CONFIGS / "dit.yaml"),
        }
    )
    model = instantiate(cfg.backbone)
    assert isinstance(model, DiT) and model.in_channels == model.out_channels == 1
    assert model.pos_embed.shape == (64, 96)


# Table 4 of the paper: DiT-S/2 33M, DiT-B/2 130M parameters (ImageNet latents 32x32x4 in, 8 out
# for the learned variance, 1001-row label table). Ours at 32x32x3 in and out: the label table
# (num_classes) and the patch/output widths differ, hence a loose range around the paper's figures.
PAPER_SIZES = {"dit_s": (33e6, 30e6, 36e6), "dit_b": (130e6, 124e6, 136e6)}


@pytest.mark.parametrize("name", PAPER_SIZES)
def test_paper_sizes_parameter_count(make_cfg, name, capsys):
    counts = {}
    for classes in ("null", "1000"):
        cfg = make_cfg(f"backbone={name}", "dataset=cifar10", f"backbone.num_classes={classes}")
        assert (cfg.backbone.image_size, cfg.backbone.in_channels, cfg.backbone.patch_size) == (
            32,
            3,
            2,
        )
        with torch.device("meta"):  # count without allocating
            model = instantiate(cfg.backbone)
        counts[classes] = sum(p.numel() for p in model.parameters())
    paper, low, high = PAPER_SIZES[name]
    with capsys.disabled():
        print(
            f"\n{name} at 32x32x3, patch 2: {counts['null'] / 1e6:.2f}M unconditional, "
            f"{counts['1000'] / 1e6:.2f}M with 1000 classes (paper: {paper / 1e6:.0f}M)"
        )
    assert low < counts["null"] < counts["1000"] < high
