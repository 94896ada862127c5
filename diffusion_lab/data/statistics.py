"""Dataset statistics of the training split: moments, spectrum, PCA, a fixed image subset.

Bases and priors that depend on the data are completed from these at build time: the PCA basis
and GUD's variance-adjusted schedules (Gerdes et al. 2024), whitening by the per-pixel std, and
Cold Diffusion's GMM prior on per-image channel means (Bansal et al. 2023, §4). Everything is
computed in one ordered pass over `datamodule.train_set` (no flips) with float64 accumulators and
population moments (divide by N); results are stored as float32.

Shapes: data_shape is (C, H, W) or (D,); D = prod(data_shape); N = len(train split);
M = min(N, max_images).
"""

import dataclasses
import hashlib
import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffusion_lab.bases.dct import DCT
from diffusion_lab.io import atomic_torch_save

PCA_MAX_DIM = 4096  # pca=None computes PCA only up to this D: a 12288² eigendecomposition is slow
_LOADER_KNOBS = {  # datamodule attributes that change loaders, not the data
    "batch_size",
    "num_workers",
    "hflip",
    "seed",
    "drop_last",
    "sigma_data",
    "download",
    "prepare_data_per_node",
    "allow_zero_length_dataloader_with_multiple_devices",
}


@dataclasses.dataclass
class DatasetStatistics:
    mean: Tensor  # data_shape, per-pixel mean
    std: Tensor  # data_shape, per-pixel std
    num_samples: int  # N
    images: Tensor  # (M, *data_shape), a seeded subset of training images, in split order
    dct_variance: Tensor | None = None  # data_shape, variance of each DCT-II coefficient (images)
    channel_means: Tensor | None = None  # (N, C), per-image channel means (images)
    pca_components: Tensor | None = None  # (D, D), covariance eigenvectors as columns
    pca_variance: Tensor | None = None  # (D,), their eigenvalues, decreasing

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def component_rms(self, basis, floor: float = 1e-4) -> Tensor:
        """√E[(U x)_i²] per component of `basis` over the stored image subset: σ_d per component."""
        coefs = basis(self.images.float())
        return coefs.pow(2).mean(0).sqrt().clamp(min=floor)

    def to_dict(self) -> dict:
        """Plain dict of tensors, ints and None: loads with torch.load(weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetStatistics":
        return cls(**d)


def _batches(dataset: Dataset, batch_size: int, num_workers: int):
    # Its own generator: an iterator over a DataLoader draws a base seed from the global RNG,
    # which would make a run's initial weights depend on whether this cache was warm.
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )
    for batch in loader:
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


def compute_dataset_statistics(
    dataset: Dataset,
    max_images: int = 2000,
    seed: int = 0,
    pca: bool | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
) -> DatasetStatistics:
    """Statistics of a dataset of `(x, y)` pairs, read in order. pca=None: only when D <= 4096."""
    n = len(dataset)
    if n < 1:
        raise ValueError("cannot compute statistics of an empty dataset")
    data_shape = tuple(dataset[0][0].shape)
    d, is_image = math.prod(data_shape), len(data_shape) == 3
    pca = d <= PCA_MAX_DIM if pca is None else pca
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_images]] = True
    if is_image:
        m_h, m_w = DCT.basis_1d(data_shape[1])[0], DCT.basis_1d(data_shape[2])[0]

    f64 = dict(dtype=torch.float64)
    s1, s2 = torch.zeros(d, **f64), torch.zeros(d, **f64)
    c1, c2 = torch.zeros(data_shape, **f64), torch.zeros(data_shape, **f64)
    gram = torch.zeros(d, d, **f64) if pca else None  # Σ x xᵀ, updated in place
    images, channel_means, start = [], [], 0
    for xb in _batches(dataset, batch_size, num_workers):
        b = len(xb)
        images.append(xb[keep[start : start + b]].float())
        start += b
        x = xb.to(torch.float64).reshape(b, d)
        s1 += x.sum(0)
        s2 += (x * x).sum(0)
        if pca:
            gram.addmm_(x.T, x)
        if is_image:
            img = x.reshape(b, *data_shape)
            coef = m_h @ img @ m_w.T
            c1 += coef.sum(0)
            c2 += (coef * coef).sum(0)
            channel_means.append(img.mean((-2, -1)).float())

    mean = s1 / n
    stats = DatasetStatistics(
        mean=mean.reshape(data_shape).float(),
        std=(s2 / n - mean**2).clamp(min=0).sqrt().reshape(data_shape).float(),
        num_samples=n,
        images=torch.cat(images),
    )
    if is_image:
        stats.dct_variance = (c2 / n - (c1 / n) ** 2).clamp(min=0).float()
        stats.channel_means = torch.cat(channel_means)
    if pca:
        gram /= n
        gram -= torch.outer(mean, mean)  # the covariance, in place
        variance, vectors = torch.linalg.eigh(gram)
        variance, vectors = variance.flip(0), vectors.flip(1)
        # sign convention: each eigenvector's largest-magnitude entry is positive
        pivot = vectors.gather(0, vectors.abs().argmax(0, keepdim=True))
        stats.pca_components = (vectors * pivot.sign()).float()
        stats.pca_variance = variance.clamp(min=0).float()
    return stats


def compute_statistics(
    datamodule, max_images: int = 2000, seed: int = 0, pca: bool | None = None
) -> DatasetStatistics:
    """Statistics of `datamodule.train_set` (set up for "fit"), without augmentation."""
    datamodule.setup("fit")
    return compute_dataset_statistics(
        datamodule.train_set,
        max_images=max_images,
        seed=seed,
        pca=pca,
        num_workers=getattr(datamodule, "num_workers", 0),
    )


def cache_key(datamodule, **kw) -> str:
    """Names the dataset, its resolution and its split: `<Class>-<name>-<shape>-<digest>`.

    The digest covers the datamodule's public str/number/tuple/path attributes, i.e. whatever can
    change the training split (fractions, seeds, sizes, paths), minus loader knobs (batch size,
    workers, flips), plus the compute arguments. Attributes set by `setup` are objects, not keyed.
    """
    ident = {
        k: str(v) if isinstance(v, os.PathLike) else v
        for k, v in sorted(vars(datamodule).items())
        if not k.startswith("_")
        and k not in _LOADER_KNOBS
        and isinstance(v, (str, int, float, tuple, os.PathLike))
    }
    shape = "x".join(str(s) for s in datamodule.data_shape)
    digest = hashlib.sha1(repr((ident, shape, sorted(kw.items()))).encode()).hexdigest()[:12]
    parts = [type(datamodule).__name__, str(getattr(datamodule, "name", "") or ""), shape, digest]
    return "-".join(p for p in parts if p)


def load_or_compute(datamodule, cache_dir: str | os.PathLike, **kw) -> DatasetStatistics:
    """Statistics from `<cache_dir>/<cache_key>.pt`, computed and written atomically if missing.

    kw go to `compute_statistics`. An unreadable cache file, or one without the PCA that `pca`
    asks for, is recomputed and overwritten.
    """
    pca = kw.pop("pca", None)
    want_pca = math.prod(datamodule.data_shape) <= PCA_MAX_DIM if pca is None else pca
    path = Path(cache_dir) / f"{cache_key(datamodule, **kw)}.pt"
    if path.exists():
        try:
            stats = DatasetStatistics.from_dict(torch.load(path, weights_only=True))
            if stats.pca_components is not None or not want_pca:
                return stats
        except Exception as e:
            warnings.warn(
                f"statistics cache {path} is unreadable ({e!r}); recomputing", stacklevel=2
            )
    print(f"computing dataset statistics of {type(datamodule).__name__} -> {path}")
    stats = compute_statistics(datamodule, pca=want_pca, **kw)
    atomic_torch_save(stats.to_dict(), path)
    return stats
