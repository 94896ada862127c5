"""DDPM++ U-Net (Song et al. 2021, "Score-Based Generative Modeling through SDEs"; layout as in
the "SongUNet" of Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models").

Residual blocks with adaptive GroupNorm scale/shift from the noise embedding, residual sums scaled
by 1/√2, multi-head self-attention at chosen resolutions, skip connections from every encoder
stage to the decoder, and a zero-initialised output convolution so the network outputs exactly 0
at initialisation. The backbone knows nothing about diffusion: it maps (x, noise_cond, cond) to an
x-shaped tensor. With `context_dim`, every attention resolution also cross-attends to a sequence
of conditioning embeddings (backbones/cross_attention.py; e.g. a text encoder's output).

Shapes: x (B, C, H, W), noise_cond (B,) float, cond (B,) long or None, context (B, L, context_dim)
or None, context_mask (B, L) bool or None -> (B, C_out, H, W);
H and W must be divisible by `downsampling_factor` = 2 ** (len(channel_mult) - 1).
"""

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lab.backbones.cross_attention import CrossAttention
from diffusion_lab.backbones.embedding import NoiseEmbedding

CHANNELS_PER_HEAD = 64


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, channels // 4) groups, lowered until it divides `channels`."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions; about channels // 64 heads (at least 1,
    lowered until it divides `channels`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.heads = max(1, channels // CHANNELS_PER_HEAD)
        while channels % self.heads:
            self.heads -= 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # The 1×1 convolutions run as matrix products over the (B, H·W, C) tokens (same weights,
        # same state_dict), so q, k, v have a contiguous head dimension and SDPA can use its fused
        # kernel on the CPU instead of the unfused math path; equal to conv + rearrange up to
        # rounding.
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)
        q, k, v = qkv.unflatten(2, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # 3 × (B, n, HW, d)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, HW, C)
        h = F.linear(h, self.proj.weight.flatten(1), self.proj.bias)
        return (x + h.transpose(1, 2).reshape(batch, channels, height, width)) / math.sqrt(2)


class ResBlock(nn.Module):
    """GroupNorm→SiLU→conv→adaptive scale/shift→SiLU→dropout→conv, plus skip, over √2; then
    optional self-attention and cross-attention to a context."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        dropout: float,
        attention: bool,
        context_dim: int | None = None,
    ):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attn = SelfAttention(out_ch) if attention else nn.Identity()
        self.cross = (
            CrossAttention(out_ch, context_dim, self.attn.heads)
            if attention and context_dim
            else None
        )

    def forward(self, x: Tensor, emb: Tensor, context=None, context_mask=None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        h = self.conv2(self.dropout(h))
        h = self.attn((h + self.skip(x)) / math.sqrt(2))
        if self.cross is not None and context is not None:
            h = self.cross(h, context, context_mask)
        return h


class Upsample(nn.Sequential):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1)
        )


class UNet(nn.Module):
    """DDPM++ U-Net: `len(channel_mult)` resolution levels, 2× average-pool down between levels."""

    data_ndim = 3  # the builder checks this against the dataset's sample shape

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 16,
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (8,),
        dropout: float = 0.1,
        num_classes: int | None = None,
        emb_dim: int | None = None,
        context_dim: int | None = None,
    ):
        super().__init__()
        self.context_dim = context_dim
        channel_mult, attn_resolutions = list(channel_mult), list(attn_resolutions)
        self.downsampling_factor = 2 ** (len(channel_mult) - 1)
        if not channel_mult or image_size % self.downsampling_factor:
            max_levels = (image_size & -image_size).bit_length()  # 1 + times 2 divides it
            raise ValueError(
                f"backbone.image_size={image_size} must be divisible by "
                f"2**(len(backbone.channel_mult)-1) = {self.downsampling_factor} for "
                f"backbone.channel_mult={channel_mult}; use an image_size that is a multiple of "
                f"{self.downsampling_factor}, or a channel_mult with 1 to {max_levels} entries"
            )
        resolutions = [image_size // 2**i for i in range(len(channel_mult))]
        if unused := sorted(set(attn_resolutions) - set(resolutions)):
            warnings.warn(
                f"backbone.attn_resolutions {unused} do not occur in this UNet (its resolutions "
                f"are {resolutions} for backbone.image_size={image_size}); no attention there",
                stacklevel=2,
            )
        emb_dim = emb_dim or 4 * model_channels
        self.embedding = NoiseEmbedding(emb_dim, model_channels, num_classes)

        def block(i: int, o: int, res: int) -> ResBlock:
            return ResBlock(i, o, emb_dim, dropout, res in attn_resolutions, context_dim)

        ch = model_channels
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for level, (mult, res) in enumerate(zip(channel_mult, resolutions)):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, model_channels * mult, res))
                ch = model_channels * mult
                skip_channels.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.AvgPool2d(2))
                skip_channels.append(ch)

        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb_dim, dropout, a, context_dim) for a in (True, False)]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            for _ in range(num_res_blocks + 1):
                out = model_channels * channel_mult[level]
                self.up.append(block(ch + skip_channels.pop(), out, resolutions[level]))
                ch = out
            if level > 0:
                self.up.append(Upsample(ch))

        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(
        self,
        x: Tensor,
        noise_cond: Tensor,
        cond: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """`context` None skips the cross-attention layers (the unconditional network)."""
        if x.shape[-1] % self.downsampling_factor or x.shape[-2] % self.downsampling_factor:
            raise ValueError(
                f"UNet input of spatial size {tuple(x.shape[-2:])} is not divisible by its "
                f"downsampling factor {self.downsampling_factor}"
            )
        emb = self.embedding(noise_cond, cond)
        h = self.conv_in(x)
        skips = [h]
        ctx = (context, context_mask)
        for layer in self.down:
            h = layer(h, emb, *ctx) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb, *ctx)
        for layer in self.up:
            h = (
                layer(torch.cat([h, skips.pop()], dim=1), emb, *ctx)
                if isinstance(layer, ResBlock)
                else layer(h)
            )
        return self.conv_out(F.silu(self.norm_out(h)))
