"""ImageDataModule: the base every dataset builds on.

Subclasses build three `Dataset`s of `(x, y)` pairs (x float32 in [-1, 1], y int64 label) in
`_build()` and describe the data through `data_shape` and `num_classes`. The base adds the
loaders, the optional train-only horizontal flip, and checks the plain keys a dataset YAML carries
for interpolation (`channels`, `dim`, `num_classes`) against the real data.
"""

import abc
import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from diffusion_lab.data.sampler import ResumableSampler


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """A fixed (train, val, test) partition of range(n), identical across runs and machines."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 "
            "and sum to less than 1"
        )
    perm = np.random.RandomState(seed).permutation(n).tolist()
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


class RandomHFlip(Dataset):
    """Wraps an image dataset; flips each sample left-right with probability 1/2."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        return (x.flip(-1) if torch.rand(()) < 0.5 else x), y


class ImageDataModule(pl.LightningDataModule, abc.ABC):
    """Train/val/test datasets of `(x, y)` pairs plus their loaders.

    `channels`, `dim` and `num_classes` are the plain keys of a dataset YAML; a value other than
    None must match the data (None = not declared; for num_classes it also means unconditional).
    Subclasses call `self._validate()` at the end of their `__init__`.
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        hflip: bool = False,
        seed: int = 0,
        drop_last: bool = True,
        sigma_data: float = 0.5,
        channels: int | None = None,
        dim: int | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        if sigma_data <= 0:
            raise ValueError(f"sigma_data={sigma_data} must be positive")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.hflip = hflip
        self.seed = seed
        self.drop_last = drop_last
        self.sigma_data = float(sigma_data)
        self._declared = {"channels": channels, "dim": dim, "num_classes": num_classes}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    @abc.abstractmethod
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one sample x, e.g. (1, 16, 16) or (2,)."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int | None:
        """Number of labels y can take; None when y is a constant 0."""

    @property
    def pixels(self) -> "ImageDataModule":
        """The image data itself (a latent datamodule's images; here, this datamodule)."""
        return self

    @property
    def channels(self) -> int:
        return self.data_shape[0]

    @property
    def dim(self) -> int:
        return math.prod(self.data_shape)

    @property
    def image_size(self) -> int | None:
        return self.data_shape[-1] if len(self.data_shape) == 3 else None

    @abc.abstractmethod
    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return the (train, val, test) datasets."""

    def _validate(self) -> None:
        name = type(self).__name__
        if self.hflip and len(self.data_shape) != 3:
            raise ValueError(
                f"hflip=true needs images; {name} samples have shape {self.data_shape}"
            )
        for key, declared in self._declared.items():
            actual = getattr(self, key)
            if declared is not None and declared != actual:
                actual = "null" if actual is None else actual
                raise ValueError(
                    f"{key}={declared} does not match the data of {name} (shape "
                    f"{self.data_shape}, num_classes {self.num_classes}): set dataset.{key}={actual}"
                )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self._build()

    def _position(self) -> tuple[int, int, int]:
        """(samples the run has consumed, rank, world size), from the trainer when attached."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        per_step = self.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        return trainer.global_step * per_step, trainer.global_rank, trainer.world_size

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        # Training order: a function of (seed, samples consumed), split across ranks by the
        # sampler itself (trainer.use_distributed_sampler=false), so resuming is exact.
        sampler = (
            ResumableSampler(
                len(dataset), self.batch_size, self.seed, self.drop_last, self._position
            )
            if train
            else None
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        if self.drop_last and len(self.train_set) < self.batch_size:
            raise ValueError(
                f"the train split has {len(self.train_set)} samples, fewer than "
                f"batch_size={self.batch_size}: lower dataset.batch_size or set dataset.drop_last=false"
            )
        return self._loader(RandomHFlip(self.train_set) if self.hflip else self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader(self.test_set, False)
