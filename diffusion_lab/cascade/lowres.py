"""The low-resolution condition of a super-resolution stage, with noise-conditioning augmentation.

Cascaded Diffusion (Ho et al. 2021, "Cascaded Diffusion Models for High Fidelity Image
Generation", §3.2 and §4.2): a super-resolution model p(x | z) is trained on z = the downsampled
x0, corrupted at a random augmentation level s and upsampled to x's size; it is sampled with z =
the previous stage's output at one fixed level. The augmentation makes the model robust to the
gap between real low-resolution images (training) and generated ones (sampling).

    z_s = z + s · ε,   ε ~ N(0, I)            (the added noise has standard deviation s)
    s ~ U[0, aug_max] when training,   s = aug_sample when sampling
    cond = [ up(z_s), s·1 ]                   (C + 1 channels at the model's size)

Differences from the paper, on purpose: CDM corrupts z with its own VP forward process at a
level s ∈ [0, 1] (z_s = α(s) z + σ(s) ε) and gives s to the network through the noise-level
embedding; here s is directly the standard deviation of the added noise (in the data's [−1, 1]
units) and is given to the network as one constant input plane, which needs no change to any
backbone (the backbone only sees concatenated channels, cascade/concat.py). `up` is bilinear
upsampling; `down` is antialiased bilinear resizing, the resize every image dataset here goes
through (data/digits.py), so a base model trained at `low_size` sees the same kind of image.

Shapes: x0 (B, C, H, W) with H = W = image_size; z (B, C, L, L) with L = low_size;
cond (B, C + 1, H, W); s a float or (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LowResCondition(nn.Module):
    """Builds the condition of a super-resolution stage from a low-resolution image.

    `resample_base`: before conditioning on a previous stage's output, resize it up to
    `image_size` and down again, as the training conditions were made. Use it when the base's
    resolution is the dataset's native one (digits: 8×8 natively, the 16×16 data are upsampled),
    so a base sample looks like down(up(native)), what the stage was trained on, not like native.
    """

    def __init__(
        self,
        low_size: int,
        image_size: int,
        channels: int,
        aug_max: float = 0.5,
        aug_sample: float = 0.1,
        resample_base: bool = False,
    ):
        super().__init__()
        if not (isinstance(low_size, int) and 1 <= low_size < image_size):
            raise ValueError(f"low_size={low_size} must be an integer in [1, {image_size})")
        if image_size % low_size:
            raise ValueError(f"image_size={image_size} is not a multiple of low_size={low_size}")
        if not (0 <= aug_sample and 0 <= aug_max):
            raise ValueError(f"aug_max={aug_max} and aug_sample={aug_sample} must be >= 0")
        self.low_size, self.image_size, self.channels = low_size, image_size, channels
        self.aug_max, self.aug_sample = float(aug_max), float(aug_sample)
        self.resample_base = bool(resample_base)

    @property
    def low_shape(self) -> tuple[int, int, int]:
        """The (C, L, L) shape of the low-resolution input (the previous stage's output)."""
        return (self.channels, self.low_size, self.low_size)

    def downsample(self, x0: Tensor) -> Tensor:
        """down(x0): antialiased bilinear resize to low_size."""
        size = (self.low_size, self.low_size)
        return F.interpolate(x0, size=size, mode="bilinear", antialias=True, align_corners=False)

    def upsample(self, z: Tensor) -> Tensor:
        """up(z): bilinear resize to image_size."""
        size = (self.image_size, self.image_size)
        return F.interpolate(z, size=size, mode="bilinear", align_corners=False)

    def augment(self, z: Tensor, s: Tensor | float, generator=None) -> Tensor:
        """z_s = z + s ε, ε drawn on the CPU from `generator` (the same on every device)."""
        s = torch.as_tensor(s, dtype=z.dtype, device=z.device).reshape(-1, 1, 1, 1)
        eps = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
        return z + s * eps

    def condition(self, z: Tensor, s: Tensor | float, generator=None) -> Tensor:
        """cond = [up(z + s ε), s·1]: (B, C + 1, H, W)."""
        if tuple(z.shape[1:]) != self.low_shape:
            raise ValueError(
                f"the low-resolution input has shape {tuple(z.shape[1:])}; this stage takes "
                f"{self.low_shape}"
            )
        s = torch.as_tensor(s, dtype=z.dtype, device=z.device).reshape(-1)
        s = s.expand(z.shape[0]) if s.numel() == 1 else s
        up = self.upsample(self.augment(z, s, generator))
        plane = s.reshape(-1, 1, 1, 1).expand(-1, 1, *up.shape[-2:])
        return torch.cat([up, plane], dim=1)

    def training_condition(self, x0: Tensor, generator=None) -> Tensor:
        """The condition of a training batch: down(x0) at levels s ~ U[0, aug_max] per sample."""
        s = self.aug_max * torch.rand(x0.shape[0], generator=generator).to(x0.device)
        return self.condition(self.downsample(x0), s, generator)

    def from_previous_stage(self, x: Tensor) -> Tensor:
        """A previous stage's samples as this stage's low-resolution input: clipped to the data
        range [−1, 1] (CDM clips between stages) and, with resample_base, down(up(x))."""
        x = x.clamp(-1, 1)
        return self.downsample(self.upsample(x)) if self.resample_base else x

    def sampling_condition(self, z: Tensor, generator=None, level: float | None = None) -> Tensor:
        """The condition at the fixed sampling level (aug_sample, or `level`)."""
        return self.condition(z, self.aug_sample if level is None else level, generator)


def validation_condition(lowres: LowResCondition, datamodule, num: int, seed: int = 0) -> Tensor:
    """The sampling condition of the first `num` validation images (cycled), downsampled, with
    seeded augmentation noise: what a super-resolution stage is sampled on outside a cascade
    (training-time grids, train.py's final samples)."""
    datamodule.setup("validate")
    data = datamodule.val_set
    x0 = torch.stack([data[i % len(data)][0] for i in range(num)])
    generator = torch.Generator().manual_seed(seed)
    return lowres.sampling_condition(lowres.downsample(x0), generator)
