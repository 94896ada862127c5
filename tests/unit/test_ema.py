"""EMA with a half-life in images (Karras et al. 2022): the average forgets half after that many."""

import pytest
import torch

from diffusion_lab.ema import ema_beta, ema_update


def test_half_life_in_images_is_independent_of_batch_size():
    for batch in (16, 64, 256):
        beta = ema_beta(batch, images_seen=10**9, half_life_images=6400, rampup_ratio=None)
        assert beta ** (6400 / batch) == pytest.approx(0.5)


def test_rampup_caps_half_life():
    assert ema_beta(
        64, images_seen=1000, half_life_images=10**6, rampup_ratio=0.05
    ) == pytest.approx(0.5 ** (64 / 50))


def test_update_forgets_half_after_half_life():
    # float64: 100 float32 lerps would round by up to ~100 ulps, machine-dependent
    model, ema = torch.nn.Linear(3, 3).double(), torch.nn.Linear(3, 3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        for p in ema.parameters():
            p.fill_(0.0)
    beta = ema_beta(32, 10**9, 3200, None)
    for _ in range(100):  # 100 × 32 images = one half-life
        ema_update(ema, model, beta)
    for p in ema.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.5), rtol=0, atol=1e-12)
