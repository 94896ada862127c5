"""PatchGAN discriminator and hinge loss: the optional adversarial term of the LDM first stage.

PatchGAN (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks",
§3.2.2; LDM's `NLayerDiscriminator`): a stack of stride-2 4×4 convolutions with BatchNorm and
LeakyReLU(0.2) that outputs one logit per overlapping image patch, so it judges local texture and
sharpness rather than the whole image. Hinge loss (Lim & Ye 2017; as LDM's `hinge_d_loss`):

    L_D = ½ ( E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))] ),      L_G = −E[D(x̂)].

Shapes: x (B, C, H, W) -> logits (B, 1, H', W') with H' ≈ H / 2**num_layers - 2.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """`num_layers` stride-2 convolutions (width doubling up to 8×`channels`), one stride-1, and a
    1-channel logit map."""

    def __init__(self, in_channels: int, channels: int = 32, num_layers: int = 2):
        super().__init__()
        if min(in_channels, channels, num_layers) < 1:
            raise ValueError(
                "discriminator in_channels, channels and num_layers must be positive: "
                f"{in_channels}, {channels}, {num_layers}"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = channels
        for n in range(1, num_layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _init_weights(m: nn.Module) -> None:
    """DCGAN initialisation, as pix2pix and LDM: conv N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """L_D = ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """L_G = −mean D(x̂): the generator (decoder) raises the discriminator's logits."""
    return -logits_fake.mean()
