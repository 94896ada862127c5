"""The latent-diffusion first stage (diffusion_lab/autoencoder/): shapes, the Gaussian posterior's
KL against torch.distributions, the hinge and adaptive GAN weights, a tiny model that learns to
reconstruct digits, and checkpoints read through the allowlist."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffusion_lab.autoencoder.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from diffusion_lab.autoencoder.kl import LOGVAR_RANGE, DiagonalGaussian, KLAutoencoder
from diffusion_lab.autoencoder.load import load_autoencoder
from diffusion_lab.autoencoder.module import adaptive_weight, psnr, reconstruction_error
from diffusion_lab.checkpoint import CONFIG_KEY, CheckpointError
from tests.conftest import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=8, num_res_blocks=1, mid_attention=False)


@pytest.mark.parametrize(
    "channel_mult, f", [((1,), 1), ((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)]
)
def test_shapes_and_latent_shape(channel_mult, f):
    model = KLAutoencoder(3, z_channels=4, channel_mult=channel_mult, **TINY)
    assert model.downsample_factor == f
    assert model.latent_shape((3, 16, 32)) == (4, 16 // f, 32 // f)
    x = torch.rand(2, 3, 16, 32) * 2 - 1
    posterior = model.encode(x)
    assert posterior.mean.shape == posterior.logvar.shape == (2, 4, 16 // f, 32 // f)
    assert model.decode(posterior.mode()).shape == x.shape
    x_hat, q = model(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and q.kl().shape == (2,)


def test_latent_shape_rejects_sizes_the_factor_does_not_divide():
    model = KLAutoencoder(1, channel_mult=(1, 2, 2), **TINY)
    with pytest.raises(
        ValueError, match="not divisible by the autoencoder's downsampling factor 4"
    ):
        model.latent_shape((1, 30, 32))
    with pytest.raises(ValueError, match="divisible"):
        model.encode(torch.zeros(1, 1, 30, 30))
    with pytest.raises(ValueError, match="1-channel"):
        model.latent_shape((3, 32, 32))


def test_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64)
    logvar = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64) * 2
    q = DiagonalGaussian(mean, logvar)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(q.kl(), ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(
        DiagonalGaussian(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)).kl(), torch.zeros(2)
    )


def test_posterior_clamps_logvar_and_samples_reproducibly():
    q = DiagonalGaussian(
        torch.zeros(1, 2, 2, 2), torch.tensor([-100.0, 100.0]).repeat(4).view(1, 2, 2, 2)
    )
    assert q.logvar.min() == LOGVAR_RANGE[0] and q.logvar.max() == LOGVAR_RANGE[1]
    assert torch.isfinite(q.kl()).all()
    q = DiagonalGaussian(
        torch.full((4000, 1, 1, 1), 3.0), torch.full((4000, 1, 1, 1), math.log(4.0))
    )
    a, b = q.sample(torch.Generator().manual_seed(1)), q.sample(torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(q.mode(), q.mean)
    # mean 3, std 2: 4000 draws put the sample mean within 5 standard errors (2 / √4000 ≈ 0.03)
    assert abs(a.mean().item() - 3.0) < 0.16 and abs(a.std().item() - 2.0) < 0.12


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 − D(x)) = 0, 0.5, 2: mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + D(x̂)) = 0, 1, 2: mean 1
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (5 / 6 + 1)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(1 / 3))  # −mean(−2, 0, 1)
    # a discriminator that separates by a margin of 1 has zero loss
    assert hinge_d_loss(torch.ones(4), -torch.ones(4)) == 0


def test_patch_discriminator_gives_a_logit_map():
    logits = PatchDiscriminator(1, channels=8, num_layers=2)(torch.randn(2, 1, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.shape[2] > 1  # one logit per patch


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    """g_loss = 4·rec_loss has 4× the gradient at the last layer: weight ≈ 1/4 (Esser et al. eq. 7)."""
    w = torch.randn(3, 3, requires_grad=True)
    rec = (w * torch.arange(9.0).view(3, 3)).pow(2).sum()
    weight = adaptive_weight(rec, 4 * rec, w)
    grad_norm = torch.autograd.grad(rec, w, retain_graph=True)[0].norm()
    torch.testing.assert_close(weight, grad_norm / (4 * grad_norm + 1e-4))
    assert abs(weight.item() - 0.25) < 1e-5 and not weight.requires_grad


def test_reconstruction_error_and_psnr():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.full_like(x, 0.2)  # 0.1 on [0, 1]: MSE 0.01 -> 20 dB
    torch.testing.assert_close(reconstruction_error(x, x_hat, "l1"), torch.full((2,), 0.2))
    torch.testing.assert_close(reconstruction_error(x, x_hat, "l2"), torch.full((2,), 0.04))
    torch.testing.assert_close(psnr(x, x_hat), torch.full((2,), 20.0))


def test_a_tiny_autoencoder_learns_to_reconstruct_digits():
    """8 digits, 16×16 → 4×4×4 latents (the same 4× compression as MNIST's 32×32 → 4×8×8).

    Threshold: 20 dB is an RMS error of 0.1 on [0, 1], a tenth of the range, where the strokes are
    plainly legible; the best reconstruction that ignores the input (the mean image of the 8)
    scores 14.0 dB on these images (asserted below), so passing needs the latents to carry the
    digit. Measured: 29.2, 28.7, 31.4 dB for seeds 0, 1, 2 (200 steps)."""
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images[:8], dtype=torch.float32)[:, None] / 16
    x = torch.nn.functional.interpolate(images, size=16, mode="bilinear", antialias=True) * 2 - 1
    baseline = psnr(x, x.mean(0, keepdim=True).expand_as(x)).mean().item()
    assert baseline < 14.5
    torch.manual_seed(0)
    model = KLAutoencoder(1, z_channels=4, channels=16, channel_mult=(1, 2, 2), mid_attention=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        x_hat, q = model(x, gen)
        loss = reconstruction_error(x, x_hat, "l1").mean() + 1e-6 * q.kl().mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        score = psnr(x, model.decode(model.encode(x).mode())).mean().item()
    assert score > 20, f"PSNR {score:.1f} dB (mean-image baseline {baseline:.1f} dB)"


# -- checkpoints: load_autoencoder through the allowlist -----------------------------------------
def _config(**autoencoder) -> dict:
    return {
        "task_name": "train_ae",
        "autoencoder": {
            "_target_": "diffusion_lab.autoencoder.kl.KLAutoencoder",
            "in_channels": 1,
            "channel_mult": [1, 2],
            **TINY,
            **autoencoder,
        },
    }


def _write(path, config: dict, state_dict: dict):
    torch.save({CONFIG_KEY: config, "state_dict": state_dict, "global_step": 0}, path)
    return path


def test_load_autoencoder_round_trip(tmp_path):
    cfg = _config()
    model = KLAutoencoder(1, channel_mult=(1, 2), **TINY)
    weights = {f"autoencoder.{k}": v for k, v in model.state_dict().items()}
    disc = {"discriminator.net.0.weight": torch.zeros(1)}  # other parts of the module are skipped
    loaded, stored = load_autoencoder(_write(tmp_path / "ae.ckpt", cfg, {**weights, **disc}))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert stored.autoencoder.channels == TINY["channels"]
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval().encode(x).mean, loaded.encode(x).mean)


def test_load_autoencoder_refuses_mismatched_and_nonfinite_weights(tmp_path):
    model = KLAutoencoder(1, channel_mult=(1, 2), **TINY)
    weights = {f"autoencoder.{k}": v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not fit") as err:
        load_autoencoder(_write(tmp_path / "a.ckpt", _config(z_channels=3), weights))
    assert "\n" not in str(err.value)
    weights["autoencoder.conv_out.weight"][0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_autoencoder(_write(tmp_path / "b.ckpt", _config(), weights))


def test_a_foreign_target_under_autoencoder_is_refused_before_import(tmp_path):
    victim = tmp_path / "written_by_the_checkpoint"
    crafted = {
        "autoencoder": {"_target_": "builtins.open", "_args_": [str(victim), "w"]},
        "dataset": {"_target_": "diffusion_lab.data.digits.DigitsDataModule"},
    }
    path = _write(tmp_path / "crafted.ckpt", crafted, {"autoencoder.x": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="autoencoder._target_=builtins.open") as err:
        load_autoencoder(path)
    assert "\n" not in str(err.value) and not victim.exists()


def test_a_diffusion_checkpoint_gets_one_line_naming_the_autoencoder_run(tmp_path):
    """A train.py checkpoint (its real stored config) passed where an autoencoder is expected."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config("train", [], tmp_path), resolve=True)
    path = _write(tmp_path / "diffusion.ckpt", cfg, {"ema.x": torch.zeros(1)})
    with pytest.raises(CheckpointError) as err:
        load_autoencoder(path)
    message = str(err.value)
    assert "\n" not in message and "is a diffusion checkpoint, not an autoencoder one" in message
    assert "latent=<outputs/train_ae/<run>/checkpoints/last.ckpt>" in message
