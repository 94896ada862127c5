"""Exponential moving average of the weights with an EDM-style half-life (Karras et al. 2022, App. F).

The EMA decay per step is β = 0.5^(batch_size / half_life_images): the average forgets half of its
past after `half_life_images` training images, whatever the batch size. An optional ramp-up caps the
half-life at `rampup_ratio` × images seen so far, so early averages do not stay tied to the random
initialisation (EDM: ema_rampup_ratio = 0.05).
"""

import torch
from torch import nn


def ema_beta(
    batch_size: int, images_seen: int, half_life_images: float, rampup_ratio: float | None
) -> float:
    half_life = half_life_images
    if rampup_ratio is not None:
        half_life = min(half_life, images_seen * rampup_ratio)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema ← β ema + (1 − β) model, parameter by parameter; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
