"""DigitsDataModule: scikit-learn's 8x8 handwritten digits, upsampled; needs no download.

1797 images with values 0..16 are rescaled to [-1, 1] (x / 16 * 2 - 1), resized to
`image_size` with antialiased bilinear interpolation, clamped to [-1, 1] and held in memory.
The train/val/test split comes from a permutation seeded by `split_seed`, so it is the same on
every run and machine.
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, TensorDataset

from diffusion_lab.data.datamodule import ImageDataModule, split_indices


def load_digit_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, image_size, image_size) float32 in [-1, 1] and int64 labels."""
    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    x = F.interpolate(
        x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )
    return x.clamp(-1, 1).contiguous(), torch.as_tensor(digits.target, dtype=torch.int64)


class DigitsDataModule(ImageDataModule):
    """scikit-learn digits at `image_size` x `image_size`, one channel, labels 0-9."""

    def __init__(
        self,
        image_size: int = 16,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_size < 1:
            raise ValueError(f"image_size={image_size} must be a positive integer")
        self._image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self._validate()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (1, self._image_size, self._image_size)

    @property
    def num_classes(self) -> int:
        return 10

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        x, y = load_digit_images(self._image_size)
        parts = split_indices(len(x), self.val_fraction, self.test_fraction, self.split_seed)
        return tuple(TensorDataset(x[idx], y[idx]) for idx in parts)
