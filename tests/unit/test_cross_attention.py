"""Cross-attention conditioning: the block, the UNet with context, encoders and the wrapper."""

import pytest
import torch

from diffusion_lab.backbones.conditioned import ContextConditioned
from diffusion_lab.backbones.cross_attention import CrossAttention
from diffusion_lab.backbones.unet import UNet
from diffusion_lab.encoders import CLIPTextEncoder, PromptEncoder


def small_unet(**kw):
    return UNet(1, None, 8, 16, (1, 2), 1, (4,), 0.0, context_dim=kw.pop("context_dim", 12), **kw)


def test_cross_attention_is_identity_at_init_and_uses_the_context():
    torch.manual_seed(0)
    block = CrossAttention(8, context_dim=5, heads=2)
    x, ctx = torch.randn(3, 8, 4, 4), torch.randn(3, 7, 5)
    assert torch.equal(block(x, ctx), x)  # zero-initialised output projection
    torch.nn.init.normal_(block.proj.weight)
    out = block(x, ctx)
    assert out.shape == x.shape and not torch.allclose(out, block(x, torch.randn(3, 7, 5)))
    # masked tokens are ignored: changing them changes nothing (in float64: the two calls
    # may round differently in float32 kernels; unmasked tokens would move the output by O(1))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[:, 4:] = False
    block, x, ctx = block.double(), x.double(), ctx.double()
    other = ctx.clone()
    other[:, 4:] = 100.0
    assert torch.allclose(block(x, ctx, mask), block(x, other, mask), rtol=0, atol=1e-12)


def test_unet_context_changes_output_and_none_skips_cross_attention():
    torch.manual_seed(0)
    net = small_unet()
    for p in net.parameters():  # leave init: perturb every weight so outputs are non-trivial
        torch.nn.init.normal_(p, std=0.1)
    x, nc = torch.randn(2, 1, 8, 8), torch.rand(2)
    a, b = torch.randn(2, 3, 12), torch.randn(2, 3, 12)
    assert not torch.allclose(net(x, nc, context=a), net(x, nc, context=b))
    without = net(x, nc)
    for block in net.modules():  # removing the cross-attention layers gives the same as None
        if hasattr(block, "cross"):
            block.cross = None
    assert torch.allclose(net(x, nc, context=a), without)


def test_prompt_encoder_shapes_null_label_and_distinct_prompts():
    torch.manual_seed(0)
    enc = PromptEncoder(num_classes=10, dim=16, depth=1, heads=2, template="digit {name}")
    ctx, mask = enc(torch.tensor([0, 3, 10]))
    assert ctx.shape == (3, mask.shape[1], 16) and mask.dtype == torch.bool
    assert mask[2].sum() == 1  # the null label: only the start token
    assert mask[0].sum() == 1 + len("digit 0")
    assert not torch.allclose(ctx[0, 1:4], ctx[1, 1:4])
    with pytest.raises(ValueError, match="class_names has 2 names"):
        PromptEncoder(num_classes=3, class_names=["a", "b"])


def test_context_conditioned_backbone_trains_and_guidance_null_is_none():
    torch.manual_seed(0)
    enc = PromptEncoder(num_classes=4, dim=12, depth=1, heads=2)
    model = ContextConditioned(small_unet(), enc, num_classes=4)
    x, nc = torch.randn(4, 1, 8, 8), torch.rand(4)
    assert torch.equal(model(x, nc, None), model(x, nc, torch.full((4,), 4)))  # None = null
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = (model(x, nc, torch.tensor([0, 1, 2, 3])) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert enc.embed.weight.grad is not None  # the encoder learns with the model
    y = model(x, nc, torch.tensor([0, 1, 2, 3]))
    assert y.shape == x.shape and not torch.allclose(y, model(x, nc, torch.tensor([3, 2, 1, 0])))
    with pytest.raises(ValueError, match="context_dim"):
        ContextConditioned(small_unet(context_dim=8), enc, num_classes=4)


def test_clip_encoder_without_weights_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="transformers|weights_path"):
        CLIPTextEncoder(num_classes=10, weights_path=str(tmp_path / "missing"))


@pytest.mark.parametrize("backbone", ["unet_xattn", "dit_xattn"])
def test_cross_attention_backbones_train_through_the_config(make_cfg, backbone):
    from diffusion_lab.cli.train import train

    cfg = make_cfg(
        "debug=fast",
        "evaluation.metrics=[]",
        f"backbone={backbone}",
        "conditional=true",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "callbacks.sample_grid.every_n_steps=2",
    )
    results = train(cfg)
    assert results["global_step"] == 2 and results["metrics"]["val/loss_ema"] > 0


def test_dit_cross_attention_is_zero_at_init_and_uses_the_context():
    from diffusion_lab.backbones.dit import DiT

    torch.manual_seed(0)
    net = DiT(1, None, 8, 2, 32, 2, 4, context_dim=12)
    block = net.blocks[0]
    x, ctx = torch.randn(2, 16, 32), torch.randn(2, 3, 12)
    assert torch.equal(block.cross(x, ctx), torch.zeros_like(x))  # zero-initialised
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    img, nc = torch.randn(2, 1, 8, 8), torch.rand(2)
    a = net(img, nc, context=ctx)
    assert a.shape == img.shape and not torch.allclose(
        a, net(img, nc, context=torch.randn(2, 3, 12))
    )
    assert not torch.allclose(a, net(img, nc))  # None skips the cross-attention
