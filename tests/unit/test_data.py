"""Datamodules: shapes, ranges, fixed splits, train-only flips, offline errors, YAML keys."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from diffusion_lab.data import (
    DigitsDataModule,
    ImageFolderDataModule,
    TorchvisionDataModule,
    Toy2DDataModule,
    split_indices,
)
from diffusion_lab.data.datamodule import RandomHFlip

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset"


# ---------------------------------------------------------------- digits and splits


def test_digits_shapes_range_and_split_sizes():
    dm = DigitsDataModule()
    dm.setup()
    assert (dm.data_shape, dm.channels, dm.dim, dm.num_classes) == ((1, 16, 16), 1, 256, 10)
    assert [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)] == [1437, 180, 180]
    x, y = dm.train_set.tensors
    assert x.shape == (1437, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99 and x.max() > 0.99
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (128, 1, 16, 16) and yb.shape == (128,)


def test_split_is_fixed_disjoint_and_complete():
    train, val, test = split_indices(1797, 0.1, 0.1, seed=0)
    # pinned: numpy's RandomState permutation is the same on every machine and version
    assert val[:5] == [1081, 1707, 927, 713, 262] and test[:5] == [353, 5, 58, 1349, 1025]
    assert sorted(train + val + test) == list(range(1797))
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 0.6, 0.5, seed=0)


def test_two_digits_instances_give_identical_splits():
    a, b = DigitsDataModule(), DigitsDataModule()
    a.setup(), b.setup()
    for sa, sb in zip((a.train_set, a.val_set, a.test_set), (b.train_set, b.val_set, b.test_set)):
        assert all(torch.equal(ta, tb) for ta, tb in zip(sa.tensors, sb.tensors))
    assert torch.equal(next(iter(a.train_dataloader()))[0], next(iter(b.train_dataloader()))[0])
    assert torch.equal(next(iter(a.val_dataloader()))[0], a.val_set.tensors[0][:128])


def test_declared_keys_are_checked_against_the_data():
    with pytest.raises(ValueError, match="channels=3"):
        DigitsDataModule(channels=3)
    with pytest.raises(ValueError, match="dataset.dim=1024"):
        DigitsDataModule(image_size=32, dim=256)
    DigitsDataModule(image_size=8, channels=1, dim=64, num_classes=None, sigma_data=0.3)


def test_batch_larger_than_train_split_is_reported():
    dm = DigitsDataModule(batch_size=5000)
    with pytest.raises(ValueError, match="batch_size=5000"):
        dm.train_dataloader()


# ---------------------------------------------------------------- horizontal flip


def test_hflip_applies_to_train_only():
    dm = DigitsDataModule(hflip=True)
    assert isinstance(dm.train_dataloader().dataset, RandomHFlip)
    assert dm.val_dataloader().dataset is dm.val_set
    assert dm.test_dataloader().dataset is dm.test_set


def test_random_hflip_flips_each_sample_independently():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).repeat(64, 1, 1, 1)
    flip = RandomHFlip(torch.utils.data.TensorDataset(x, torch.zeros(64, dtype=torch.int64)))
    torch.manual_seed(0)
    out = torch.stack([flip[i][0] for i in range(64)])
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | flipped).all()
    assert 10 < flipped.sum() < 54


# ---------------------------------------------------------------- toy 2-D


@pytest.mark.parametrize("name", ["gmm", "moons", "swiss_roll", "checkerboard"])
def test_toy2d_shapes_range_and_determinism(name):
    a = Toy2DDataModule(name=name, num_train=1000, num_val=100, num_test=100)
    b = Toy2DDataModule(name=name, num_train=1000, num_val=100, num_test=100)
    a.setup(), b.setup()
    x, y = a.train_set.tensors
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert a.data_shape == (2,) and a.dim == 2 and len(a.val_set) == len(a.test_set) == 100
    assert x.abs().max() <= 1.05
    assert torch.equal(x, b.train_set.tensors[0]) and torch.equal(y, b.train_set.tensors[1])
    assert (a.num_classes, int(y.max())) == ((8, 7) if name == "gmm" else (None, 0))


def test_toy2d_errors():
    with pytest.raises(ValueError, match="checkerboard.*gmm.*moons.*swiss_roll"):
        Toy2DDataModule(name="spiral")
    with pytest.raises(ValueError, match="hflip"):
        Toy2DDataModule(hflip=True)
    with pytest.raises(ValueError, match="image_size"):
        Toy2DDataModule(image_size=16)


# ---------------------------------------------------------------- torchvision (offline)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 + array.ndim  # 0x08 = unsigned byte
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


def _fake_mnist(root: Path, n_train: int = 20, n_test: int = 10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    images = {n: rng.randint(0, 256, size=(n, 28, 28), dtype=np.uint8) for n in (n_train, n_test)}
    labels = {n: rng.randint(0, 10, size=n).astype(np.uint8) for n in (n_train, n_test)}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[n])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[n])
    return images[n_train], labels[n_train]


def test_fake_mnist_round_trip(tmp_path):
    images, labels = _fake_mnist(tmp_path)
    dm = TorchvisionDataModule("mnist", str(tmp_path), image_size=28, download=False, batch_size=4)
    dm.prepare_data()
    dm.setup()
    assert [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)] == [19, 1, 10]
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    i = dm.train_set.indices[0]
    x, y = dm.train_set[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == labels[i]
    torch.testing.assert_close(x[0], torch.from_numpy(images[i]).float() / 255 * 2 - 1)
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 1, 28, 28) and yb.dtype == torch.int64

    resized = TorchvisionDataModule("mnist", str(tmp_path), image_size=32, download=False)
    resized.setup()
    x32 = resized.test_set[0][0]
    assert x32.shape == (1, 32, 32) and x32.min() >= -1 and x32.max() <= 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_5"),
        ("celeba64", "celeba/list_eval_partition.txt"),
    ],
)
def test_missing_files_error_names_the_expected_paths(tmp_path, name, expected):
    dm = TorchvisionDataModule(name, str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    message = str(err.value)
    assert name in message and str(tmp_path / expected) in message
    assert "pass paths.data_dir=... or connect to the internet" in message
    assert list(tmp_path.iterdir()) == []  # nothing was created or downloaded


# ---------------------------------------------------------------- image folder


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_loads_resizes_and_labels(tmp_path):
    for i in range(4):
        _png(tmp_path / "cats" / f"{i}.png", (20, 12), (255, 0, 0))
        _png(tmp_path / "dogs" / "deep" / f"{i}.jpg", (12, 12), (0, 0, 255))
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=8, use_subfolder_labels=True, val_fraction=0.25
    )
    dm.setup()
    assert dm.num_classes == 2 and dm.class_names == ["cats", "dogs"]
    assert (len(dm.train_set), len(dm.val_set)) == (6, 2) and dm.test_set is dm.val_set
    for x, y in (dm.train_set[i] for i in range(6)):
        assert x.shape == (3, 8, 8) and y.dtype == torch.int64
        assert torch.allclose(
            x[:, 4, 4], torch.tensor([1.0, -1, -1] if y == 0 else [-1.0, -1, 1]), atol=0.02
        )

    gray = ImageFolderDataModule(str(tmp_path / "cats"), image_size=8, channels=1, batch_size=2)
    xb, yb = next(iter(gray.train_dataloader()))
    assert xb.shape == (2, 1, 8, 8) and yb.tolist() == [0, 0] and gray.num_classes is None


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nope")).setup()
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataModule(str(tmp_path)).setup()
    _png(tmp_path / "loose.png", (8, 8), (0, 0, 0))
    with pytest.raises(ValueError, match="class subfolder"):
        ImageFolderDataModule(str(tmp_path), use_subfolder_labels=True).setup()


# ---------------------------------------------------------------- dataset YAMLs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_dataset_yaml_plain_keys_match_the_data(path, tmp_path):
    cfg = OmegaConf.merge({"paths": {"data_dir": str(tmp_path)}}, {"dataset": OmegaConf.load(path)})
    dm = instantiate(cfg.dataset)
    assert (cfg.dataset.channels, cfg.dataset.dim) == (dm.channels, dm.dim)
    assert cfg.dataset.image_size == dm.image_size and cfg.dataset.sigma_data == 0.5
    assert cfg.dataset.num_classes in (None, dm.num_classes)
