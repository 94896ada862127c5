"""ImageFolderDataModule: every image under a folder, recursively (png, jpg, jpeg, bmp, webp).

Images are converted to RGB (L when channels=1), resized (shorter side) and center-cropped to
`image_size`, and scaled to [-1, 1]. The label is 0, or with `use_subfolder_labels` the index of
the top-level subfolder holding the image (sorted by name). Val (and optionally test) images are a
fixed seeded fraction; when the test split is empty (test_fraction=0) it is the val split.
"""

from functools import cached_property
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from diffusion_lab.data.datamodule import ImageDataModule, split_indices

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFiles(Dataset):
    """Image paths with labels, loaded from disk on access."""

    def __init__(self, paths: list[Path], labels: list[int], mode: str, image_size: int):
        self.paths, self.labels, self.mode = paths, labels, mode
        half = [0.5] * len(mode)
        self.transform = transforms.Compose(
            [
                transforms.Resize(image_size, antialias=True),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(half, half),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            x = self.transform(image.convert(self.mode))
        return x, torch.tensor(self.labels[index], dtype=torch.int64)


class ImageFolderDataModule(ImageDataModule):
    """Images from `data_dir` at `image_size` x `image_size` with 3 (RGB) or 1 (L) channels."""

    def __init__(
        self,
        data_dir: str,
        image_size: int = 64,
        channels: int = 3,
        use_subfolder_labels: bool = False,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels={channels}: image folders load as RGB (3) or L (1)")
        self.data_dir = Path(data_dir).expanduser()
        self._image_size = image_size
        self._channels = channels
        self.use_subfolder_labels = use_subfolder_labels
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self._validate()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (self._channels, self._image_size, self._image_size)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.use_subfolder_labels else None

    @cached_property
    def files(self) -> list[Path]:
        """Every image under data_dir, sorted; raises FileNotFoundError if there are none."""
        if not self.data_dir.is_dir():
            raise FileNotFoundError(
                f"image folder data_dir={self.data_dir} does not exist: pass paths.data_dir=..."
            )
        files = sorted(p for p in self.data_dir.rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not files:
            raise FileNotFoundError(
                f"no images ({', '.join(EXTENSIONS)}) found under data_dir={self.data_dir}"
            )
        return files

    @cached_property
    def class_names(self) -> list[str]:
        """Top-level subfolders holding images, sorted; label i is class_names[i]."""
        top = [p.relative_to(self.data_dir).parts for p in self.files]
        loose = [parts[0] for parts in top if len(parts) == 1]
        if loose:
            raise ValueError(
                f"use_subfolder_labels=true needs every image inside a class subfolder of "
                f"{self.data_dir}; found {len(loose)} at the top level, e.g. {loose[0]}"
            )
        return sorted({parts[0] for parts in top})

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        if self.use_subfolder_labels:
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = [index[p.relative_to(self.data_dir).parts[0]] for p in self.files]
        else:
            labels = [0] * len(self.files)
        parts = split_indices(
            len(self.files), self.val_fraction, self.test_fraction, self.split_seed
        )
        mode = "RGB" if self._channels == 3 else "L"
        train, val, test = (
            ImageFiles(
                [self.files[i] for i in idx], [labels[i] for i in idx], mode, self._image_size
            )
            for idx in parts
        )
        return train, val, (test if len(test) else val)
