"""KL-regularised convolutional autoencoder: the first stage of latent diffusion (Rombach et al.
2022, "High-Resolution Image Synthesis with Latent Diffusion Models", §3 and App. G).

The encoder maps x to the parameters of a diagonal Gaussian posterior q(z|x) = N(μ(x), diag σ²(x));
the decoder maps a latent z back to image space. Training (autoencoder/module.py) minimises a
reconstruction loss plus a small weight times KL(q(z|x) ‖ N(0, I)), which keeps the latent space
close to a standard normal without forcing it to carry little information. Layout as LDM's
`Encoder`/`Decoder`: residual blocks per resolution level, stride-2 downsampling between levels,
a middle block with self-attention, 1×1 convolutions in and out of the latent ("quant_conv").
The decoder output is unbounded (no tanh), as in LDM.

Shapes: x (B, C, H, W) in [-1, 1]; z (B, z_channels, H / f, W / f) with the downsampling factor
f = 2 ** (len(channel_mult) - 1); H and W must be divisible by f.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lab.backbones.unet import SelfAttention, group_norm

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's clamp of log σ² (keeps exp finite in fp32)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag exp(logvar)); logvar clamped to LOGVAR_RANGE.
    Shapes: mean, logvar (B, z_channels, h, w)."""

    def __init__(self, mean: Tensor, logvar: Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        """Split (B, 2·z_channels, h, w) encoder output into mean and logvar along channels."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = μ + σ ⊙ ε, ε ~ N(0, I) (the reparameterisation trick); ε is drawn on the
        generator's device (a CPU generator works for CUDA latents) and moved to the latents'."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(
            self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> Tensor:
        """The posterior mean (the mode of a Gaussian)."""
        return self.mean

    def kl(self) -> Tensor:
        """(B,) KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) over all latent dimensions."""
        terms = self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)


class ResnetBlock(nn.Module):
    """GroupNorm→SiLU→conv→GroupNorm→SiLU→dropout→conv, plus a (1×1 when widths differ) skip."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 3×3 convolution with LDM's asymmetric (0, 1, 0, 1) padding: H → H / 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Sequential):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 convolution: H → 2H."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1)
        )


def _middle(channels: int, attention: bool, dropout: float) -> nn.Sequential:
    """ResnetBlock → (self-attention) → ResnetBlock at the lowest resolution."""
    return nn.Sequential(
        ResnetBlock(channels, channels, dropout),
        SelfAttention(channels) if attention else nn.Identity(),
        ResnetBlock(channels, channels, dropout),
    )


class KLAutoencoder(nn.Module):
    """LDM's KL-regularised first stage, small and convolutional (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        z_channels: int = 4,
        channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        mid_attention: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(
                f"channel_mult must be a non-empty list of positive ints: {channel_mult}"
            )
        if min(in_channels, z_channels, channels, num_res_blocks) < 1:
            raise ValueError(
                "in_channels, z_channels, channels and num_res_blocks must be positive: "
                f"{in_channels}, {z_channels}, {channels}, {num_res_blocks}"
            )
        self.in_channels = in_channels
        self.z_channels = z_channels
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        widths = [channels * m for m in channel_mult]

        # encoder: x -> (mean, logvar)
        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        ch = channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(ResnetBlock(ch, width, dropout))
                ch = width
            if level < len(widths) - 1:
                enc.append(Downsample(ch))
        enc += [
            _middle(ch, mid_attention, dropout),
            group_norm(ch),
            nn.SiLU(),
            nn.Conv2d(ch, 2 * z_channels, 3, padding=1),
        ]
        self.encoder = nn.Sequential(*enc)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1)

        # decoder: z -> x_hat (one more residual block per level than the encoder, as LDM)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)
        ch = widths[-1]
        dec: list[nn.Module] = [
            nn.Conv2d(z_channels, ch, 3, padding=1),
            _middle(ch, mid_attention, dropout),
        ]
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                dec.append(ResnetBlock(ch, widths[level], dropout))
                ch = widths[level]
            if level > 0:
                dec.append(Upsample(ch))
        dec += [group_norm(ch), nn.SiLU()]
        self.decoder = nn.Sequential(*dec)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)  # the adaptive-weight layer

    def latent_shape(self, data_shape: Sequence[int]) -> tuple[int, int, int]:
        """(z_channels, H // f, W // f) for data of shape (C, H, W); ValueError if f ∤ H or W."""
        if len(data_shape) != 3:
            raise ValueError(f"data_shape must be (C, H, W), got {tuple(data_shape)}")
        c, h, w = (int(s) for s in data_shape)
        f = self.downsample_factor
        if c != self.in_channels:
            raise ValueError(
                f"the autoencoder takes {self.in_channels}-channel images, the data has {c} channels"
            )
        if h % f or w % f:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the autoencoder's downsampling factor "
                f"{f} (= 2**(len(channel_mult)-1)): resize the data (dataset.image_size) to a "
                f"multiple of {f} or use fewer channel_mult levels"
            )
        return (self.z_channels, h // f, w // f)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) for x (B, C, H, W) in [-1, 1]."""
        self.latent_shape(x.shape[1:])  # clear error instead of a shape mismatch deep inside
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """x_hat (B, C, H, W), unbounded, for z (B, z_channels, h, w)."""
        if z.ndim != 4 or z.shape[1] != self.z_channels:
            raise ValueError(
                f"decode expects latents (B, {self.z_channels}, h, w), got {tuple(z.shape)}"
            )
        return self.conv_out(self.decoder(self.post_quant_conv(z)))

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, DiagonalGaussian]:
        """(decode(z), q(z|x)) with z ~ q(z|x) drawn with `generator`."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior

    @property
    def last_layer(self) -> Tensor:
        """Weight of the decoder's final convolution (LDM's adaptive GAN weight uses its grads)."""
        return self.conv_out.weight
