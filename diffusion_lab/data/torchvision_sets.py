"""TorchvisionDataModule: MNIST, Fashion-MNIST, CIFAR-10 and CelebA-64 from `data_dir`.

Files are read where torchvision keeps them (`expected_files`). Missing files are downloaded when
`download` is true; without a network the error names every file torchvision needs and where.
Without an official val split, a fixed seeded `val_fraction` of train is held out; test is the
official test split. Images become float32 in [-1, 1]; CelebA's label is 0.
"""

import os
from dataclasses import dataclass

from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from diffusion_lab.data.datamodule import ImageDataModule, split_indices

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_GUNZIP = "gunzip the *-ubyte.gz files, torchvision reads only the uncompressed ones"


@dataclass(frozen=True)
class _Spec:
    cls: type
    folder: str  # relative to data_dir
    files: tuple[str, ...]  # relative to folder; a trailing / marks a folder of images
    note: str  # how the downloaded archives become the expected files
    channels: int
    size: int  # native side length (after the crop, if any)
    default_size: int  # image_size when none is given
    num_classes: int | None = 10
    crop: int | None = None  # center crop applied before resizing


SPECS = {
    "mnist": _Spec(
        datasets.MNIST, "MNIST/raw", _IDX, _GUNZIP, channels=1, size=28, default_size=28
    ),
    "fashion_mnist": _Spec(
        datasets.FashionMNIST,
        "FashionMNIST/raw",
        _IDX,
        _GUNZIP,
        channels=1,
        size=28,
        default_size=28,
    ),
    "cifar10": _Spec(
        datasets.CIFAR10,
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        "extract cifar-10-python.tar.gz, the python version, into data_dir",
        channels=3,
        size=32,
        default_size=32,
    ),
    "celeba64": _Spec(
        datasets.CelebA,
        "celeba",
        ("img_align_celeba/", "list_eval_partition.txt", "list_attr_celeba.txt")
        + ("identity_CelebA.txt", "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt"),
        "extract img_align_celeba.zip next to the txt files",
        channels=3,
        size=140,
        default_size=64,
        num_classes=None,
        crop=140,
    ),
}


def _zero_label(_target) -> int:
    return 0


class TorchvisionDataModule(ImageDataModule):
    """A torchvision dataset at `image_size` (default: its native size; CelebA: 64)."""

    def __init__(
        self,
        name: str,
        data_dir: str,
        image_size: int | None = None,
        download: bool = True,
        val_fraction: float = 0.05,
        split_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if name not in SPECS:
            raise ValueError(f"unknown torchvision dataset name={name!r}; valid: {sorted(SPECS)}")
        self.name = name
        self.spec = SPECS[name]
        self.data_dir = os.path.expanduser(str(data_dir))
        self._image_size = image_size or self.spec.default_size
        self.download = download
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self._validate()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (self.spec.channels, self._image_size, self._image_size)

    @property
    def num_classes(self) -> int | None:
        return self.spec.num_classes

    def expected_files(self) -> list[str]:
        """The paths torchvision reads (a trailing / marks a folder of images)."""
        return [os.path.join(self.data_dir, self.spec.folder, f) for f in self.spec.files]

    def _transform(self) -> transforms.Compose:
        steps = [transforms.CenterCrop(self.spec.crop)] if self.spec.crop else []
        if self._image_size != self.spec.size:
            steps.append(transforms.Resize((self._image_size, self._image_size), antialias=True))
        half = [0.5] * self.spec.channels
        return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(half, half)])

    def _missing_error(self, reason: str) -> FileNotFoundError:
        lines = [
            f"  {path}{'' if os.path.exists(path) else '  (missing)'}"
            for path in self.expected_files()
        ]
        if not any(line.endswith("(missing)") for line in lines):
            lines.append("  all present, but torchvision rejected them (corrupt or truncated?)")
        return FileNotFoundError(
            f"dataset {self.name!r} not found under data_dir={self.data_dir} ({reason}). "
            "torchvision expects:\n" + "\n".join(lines) + f"\nPut the files there "
            f"({self.spec.note}) and pass paths.data_dir=... or connect to the internet and set "
            "dataset.download=true."
        )

    def _open(self, split: str) -> Dataset:
        """One split ("train", "valid" or "test"), downloading it only if it is missing."""
        if self.name == "celeba64":
            args = {"split": split, "target_type": "attr", "target_transform": _zero_label}
        else:
            args = {"train": split == "train"}
        make = self.spec.cls
        try:
            return make(self.data_dir, download=False, transform=self._transform(), **args)
        except RuntimeError:
            if not self.download:
                raise self._missing_error("download=false") from None
        try:
            return make(self.data_dir, download=True, transform=self._transform(), **args)
        except (RuntimeError, OSError, ImportError) as err:
            detail = [line for line in str(err).splitlines() if line.strip()] or [repr(err)]
            raise self._missing_error(f"download failed: {detail[-1].strip()}") from err

    def prepare_data(self) -> None:
        if any(not os.path.exists(path) for path in self.expected_files()):
            for split in ("train", "test"):
                self._open(split)

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        if self.name == "celeba64":
            return self._open("train"), self._open("valid"), self._open("test")
        full = self._open("train")
        train_idx, val_idx, _ = split_indices(len(full), self.val_fraction, 0.0, self.split_seed)
        return Subset(full, train_idx), Subset(full, val_idx), self._open("test")
