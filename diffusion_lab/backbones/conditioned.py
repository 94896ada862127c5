"""ContextConditioned: a backbone that sees its class labels through an encoder and
cross-attention instead of a label embedding.

    backbone(x, noise_cond, cond) = net(x, noise_cond, context=E(cond), context_mask=...)

cond None (an unconditional call) is the null label for every sample, so classifier-free
guidance and label dropout work unchanged. `net` must accept `context` (UNet with context_dim).

Shapes: x (B, C, H, W), noise_cond (B,), cond (B,) long or None -> x-shaped.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContextConditioned(nn.Module):
    def __init__(self, net: nn.Module, encoder: nn.Module, num_classes: int):
        super().__init__()
        if getattr(net, "context_dim", None) != encoder.dim:
            raise ValueError(
                f"backbone.net.context_dim={getattr(net, 'context_dim', None)} must equal the "
                f"encoder's output width {encoder.dim}"
            )
        self.net, self.encoder, self.num_classes = net, encoder, num_classes

    def forward(self, x: Tensor, noise_cond: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            cond = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
        context, mask = self.encoder(cond)
        return self.net(x, noise_cond, context=context.to(x.dtype), context_mask=mask)
