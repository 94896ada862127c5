"""Dataset statistics: moments, spectrum and PCA against direct computations; dict round trip;
the on-disk cache (hits, keys, corrupt files, missing PCA)."""

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from diffusion_lab.bases import PCA
from diffusion_lab.data import DigitsDataModule, ImageDataModule
from diffusion_lab.data import statistics as S
from diffusion_lab.data.statistics import DatasetStatistics, compute_statistics, load_or_compute

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDataModule(ImageDataModule):
    """Seeded Gaussian data with a per-pixel mean and scale, split 30/10/10."""

    def __init__(self, shape=(2, 3, 5), split_seed=0, **kwargs):
        super().__init__(**kwargs)
        self.shape, self.split_seed = tuple(shape), split_seed

    @property
    def data_shape(self):
        return self.shape

    @property
    def num_classes(self):
        return None

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        g = torch.Generator().manual_seed(self.split_seed)
        x = torch.randn(50, *self.shape, generator=g) * torch.rand(self.shape, generator=g)
        x = x + torch.linspace(-0.5, 0.5, x[0].numel()).reshape(self.shape)
        y = torch.zeros(50, dtype=torch.int64)
        return (
            TensorDataset(x[:30], y[:30]),
            TensorDataset(x[30:40], y[30:40]),
            TensorDataset(x[40:], y[40:]),
        )


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(batch_size=16)
    return dm, compute_statistics(dm)


def check_against_direct(stats, x):
    # float64: the statistics accumulate in float64 and are rounded once to float32 (1 ulp)
    x = x.double()
    total = x.var(0, correction=0).sum()
    torch.testing.assert_close(stats.mean, x.mean(0).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.std, x.std(0, correction=0).float(), atol=1e-5, rtol=0)
    assert stats.num_samples == len(x) and stats.data_shape == tuple(x.shape[1:])
    torch.testing.assert_close(stats.pca_variance.double().sum(), total, rtol=1e-5, atol=0)
    assert torch.all(stats.pca_variance[:-1] >= stats.pca_variance[1:])
    v = stats.pca_components.double()
    torch.testing.assert_close(v.T @ v, torch.eye(len(v), dtype=torch.float64), atol=1e-5, rtol=0)
    if x.ndim == 4:
        torch.testing.assert_close(stats.dct_variance.double().sum(), total, rtol=1e-5, atol=0)
        torch.testing.assert_close(stats.channel_means, x.mean((-2, -1)).float())
    else:
        assert stats.dct_variance is None and stats.channel_means is None


def test_digits_statistics_match_direct_computation(digits):
    dm, stats = digits
    x = dm.train_set.tensors[0]
    check_against_direct(stats, x)
    assert torch.equal(stats.images, x)  # max_images=2000 > N: every image, in split order
    # the spectrum of natural images falls off: DC carries far more variance than the corner
    assert stats.dct_variance[0, 0, 0] > 10 * stats.dct_variance[0, -1, -1]


@pytest.mark.parametrize("shape", [(2, 3, 5), (3,)])
def test_synthetic_statistics_match_direct_computation(shape):
    dm = TinyDataModule(shape=shape, batch_size=4)
    stats = compute_statistics(dm)
    check_against_direct(stats, dm.train_set.tensors[0])
    small_batches = S.compute_dataset_statistics(dm.train_set, batch_size=7)
    # float64 sums in another order, rounded once to float32: 1 ulp apart at most
    torch.testing.assert_close(small_batches.pca_variance, stats.pca_variance)


def test_training_split_is_read_without_flips(digits):
    dm, stats = digits
    flipped = compute_statistics(DigitsDataModule(hflip=True), pca=False)
    assert torch.equal(flipped.mean, stats.mean) and flipped.pca_components is None
    with pytest.raises(ValueError, match="pca=True"):
        PCA().setup(dm.data_shape, flipped)


def test_image_subset_is_seeded():
    dm = DigitsDataModule()
    a, b, c = (compute_statistics(dm, max_images=50, seed=s, pca=False) for s in (0, 0, 1))
    assert a.images.shape == (50, 1, 16, 16) and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    rows = dm.train_set.tensors[0].flatten(1)
    assert all((rows == img.flatten()).all(1).any() for img in a.images)


def test_dict_round_trip_with_weights_only(digits, tmp_path):
    stats = digits[1]
    torch.save(stats.to_dict(), tmp_path / "s.pt")
    back = DatasetStatistics.from_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for key, value in stats.to_dict().items():
        other = getattr(back, key)
        assert other == value if not torch.is_tensor(value) else torch.equal(other, value)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = S.compute_statistics

    def compute(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "compute_statistics", compute)
    return calls


def test_cache_hit_returns_identical_tensors(tmp_path, counted, capsys):
    first = load_or_compute(TinyDataModule(), tmp_path)
    second = load_or_compute(TinyDataModule(batch_size=3, num_workers=0, hflip=True), tmp_path)
    assert len(counted) == 1 and capsys.readouterr().out.count("computing") == 1
    for key, value in first.to_dict().items():
        assert torch.equal(getattr(second, key), value) if torch.is_tensor(value) else True
    assert [p.name for p in tmp_path.iterdir()] == [f"{S.cache_key(TinyDataModule())}.pt"]
    load_or_compute(TinyDataModule(split_seed=1), tmp_path)  # another split: another file
    load_or_compute(TinyDataModule(shape=(2, 3, 4)), tmp_path)  # another resolution
    load_or_compute(TinyDataModule(), tmp_path, max_images=5)  # another image subset
    assert len(counted) == 4 and len(list(tmp_path.iterdir())) == 4


def test_corrupt_cache_is_recomputed(tmp_path, counted):
    path = tmp_path / f"{S.cache_key(TinyDataModule())}.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        stats = load_or_compute(TinyDataModule(), tmp_path)
    assert len(counted) == 1
    assert torch.equal(
        DatasetStatistics.from_dict(torch.load(path, weights_only=True)).mean, stats.mean
    )


def test_cache_without_pca_is_recomputed_when_pca_is_asked_for(tmp_path, counted):
    assert load_or_compute(TinyDataModule(), tmp_path, pca=False).pca_components is None
    assert load_or_compute(TinyDataModule(), tmp_path, pca=False).pca_components is None
    assert load_or_compute(TinyDataModule(), tmp_path).pca_components is not None
    assert load_or_compute(TinyDataModule(), tmp_path, pca=False).pca_components is not None
    assert len(counted) == 2


def test_computing_statistics_leaves_the_global_rng_alone(tmp_path):
    """A run's initial weights must not depend on whether the statistics cache was warm: the
    pass over the data (a DataLoader) draws no number from the global RNG."""
    dm = TinyDataModule()
    torch.manual_seed(0)
    load_or_compute(dm, tmp_path)  # cold: computes and writes the cache
    cold = torch.rand(3)
    torch.manual_seed(0)
    load_or_compute(dm, tmp_path)  # warm: reads it
    assert torch.equal(cold, torch.rand(3))
