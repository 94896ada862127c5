"""Toy2DDataModule: synthetic 2-D point clouds, generated from a seed, roughly inside [-1, 1]^2.

gmm: `num_modes` Gaussians (std `mode_std`) evenly spaced on a circle of radius 0.75, y = mode;
moons and swiss_roll: scikit-learn's generators (swiss_roll's x-z slice), rescaled, y = 0;
checkerboard: uniform on 8 of the 16 cells of a 4x4 board over [-1, 1]^2, y = 0.
"""

import numpy as np
import torch
from sklearn.datasets import make_moons, make_swiss_roll
from torch.utils.data import Dataset, TensorDataset

from diffusion_lab.data.datamodule import ImageDataModule


def _gmm(rs: np.random.RandomState, n: int, num_modes: int = 8, mode_std: float = 0.05):
    y = rs.randint(num_modes, size=n)
    angle = 2 * np.pi * y / num_modes
    centers = 0.75 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centers + mode_std * rs.randn(n, 2), y


def _moons(rs: np.random.RandomState, n: int):
    x, _ = make_moons(n, noise=0.05, random_state=rs)
    return (x - np.array([0.5, 0.25])) / 1.75, np.zeros(n, dtype=np.int64)


def _swiss_roll(rs: np.random.RandomState, n: int):
    x, _ = make_swiss_roll(n, noise=0.25, random_state=rs)
    return x[:, [0, 2]] / 15, np.zeros(n, dtype=np.int64)


def _checkerboard(rs: np.random.RandomState, n: int):
    x1 = rs.rand(n) * 4 - 2
    x2 = rs.rand(n) - 2 * rs.randint(2, size=n) + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) / 2, np.zeros(n, dtype=np.int64)


GENERATORS = {
    "gmm": _gmm,
    "moons": _moons,
    "swiss_roll": _swiss_roll,
    "checkerboard": _checkerboard,
}


class Toy2DDataModule(ImageDataModule):
    """2-D points: data_shape (2,), num_classes = num_modes for gmm, else None (y = 0)."""

    def __init__(
        self,
        name: str = "gmm",
        num_train: int = 20000,
        num_val: int = 2000,
        num_test: int = 2000,
        data_seed: int = 0,
        num_modes: int = 8,
        mode_std: float = 0.05,
        image_size: None = None,
        batch_size: int = 512,
        **kwargs,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        if name not in GENERATORS:
            raise ValueError(f"unknown toy2d name={name!r}; valid names: {sorted(GENERATORS)}")
        if image_size is not None:
            raise ValueError(f"image_size={image_size}: toy2d data are 2-D points; set it to null")
        self.name = name
        self.sizes = (num_train, num_val, num_test)
        self.data_seed = data_seed
        self.num_modes = num_modes
        self.mode_std = mode_std
        self._validate()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def num_classes(self) -> int | None:
        return self.num_modes if self.name == "gmm" else None

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        rs = np.random.RandomState(self.data_seed)
        params = (
            {"num_modes": self.num_modes, "mode_std": self.mode_std} if self.name == "gmm" else {}
        )
        x, y = GENERATORS[self.name](rs, sum(self.sizes), **params)
        x = torch.as_tensor(x, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.int64)
        return tuple(TensorDataset(*part) for part in zip(x.split(self.sizes), y.split(self.sizes)))
