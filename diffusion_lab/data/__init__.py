"""Datamodules yielding `(x, y)` batches: x float32 in [-1, 1], y int64 labels."""

from diffusion_lab.data.datamodule import ImageDataModule, split_indices
from diffusion_lab.data.digits import DigitsDataModule
from diffusion_lab.data.image_folder import ImageFolderDataModule
from diffusion_lab.data.torchvision_sets import TorchvisionDataModule
from diffusion_lab.data.toy2d import Toy2DDataModule

__all__ = [
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "Toy2DDataModule",
    "TorchvisionDataModule",
    "split_indices",
]
