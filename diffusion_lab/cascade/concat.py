"""A backbone conditioned on an image by channel concatenation (Cascaded Diffusion, Ho et al.
2021, §3: the super-resolution model takes the upsampled low-resolution image as extra input
channels; SR3, Saharia et al. 2021, does the same).

    backbone(x, noise_cond, cond) = net(cat([x, cond], channel axis), noise_cond)

`net` is any image backbone built with in_channels = C + C_cond and out_channels = C (build.py
sets both). Shapes: x (B, C, H, W); cond (B, C_cond, H, W); output (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConcatCondition(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, noise_cond: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None or not torch.is_floating_point(cond):
            raise ValueError(
                "this super-resolution network needs its low-resolution image as `cond` "
                "(B, C + 1, H, W); sample it in a cascade: python sample.py ckpt_path=<base> "
                "superres=[<this checkpoint>]"
            )
        if cond.shape[0] != x.shape[0] or cond.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"cond of shape {tuple(cond.shape)} does not match x of shape {tuple(x.shape)}"
            )
        return self.net(torch.cat([x, cond.to(x.dtype)], dim=1), noise_cond)
