"""Sample quality: FID, KID and IS through torch-fidelity, with reference features cached on disk.

FID (Heusel et al. 2017) is the Fréchet distance of Gaussians fitted to features,
‖μ1−μ2‖² + Tr(S1 + S2 − 2(S1 S2)^½), covariances with 1/(N−1). KID (Bińkowski et al. 2018) is
the unbiased MMD² estimate with the cubic polynomial kernel, averaged over random subsets. IS
(Salimans et al. 2016) is exp E KL(p(y|x) ‖ p(y)), averaged over splits. torch-fidelity computes
all three; this module chooses the extractor, prepares the images and names the results.

Keys name the metric, the feature extractor and the number of generated samples:
`fid_inception_50k`, `kid_digits_2k` (+ `_std`), `is_inception_10k` (+ `_std`).

The reference is the dataset's training split. Its features and FID statistics are cached by
torch-fidelity under `cache_dir` as `<cache_name>-<extractor id>-<torch-fidelity suffix>.pt`;
cache_name names the dataset and resolution (`statistics.cache_key`), the extractor id the
weights file's SHA-256 (`inception-<digest>`, `classifier-<digest>`), so a retrained
classifier or other weights never reuse stale features.

Shapes: samples (B, C, H, W) in [−1, 1]; reference (N, C, H, W) in [−1, 1] or a Dataset of
`(x, y)` pairs; C = 1 images are repeated to 3 channels for Inception.
"""

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch_fidelity
from torch import Tensor
from torch.utils.data import Dataset

from diffusion_lab.data.statistics import cache_key
from diffusion_lab.metrics.classifier import DomainClassifier, train_or_load_classifier
from diffusion_lab.metrics.features import (
    DOMAIN,
    INCEPTION,
    file_digest,
    inception_weights_path,
    to_uint8,
)
from diffusion_lab.metrics.names import QUALITY

EXTRACTORS = ("inception", "domain")
_FLAGS = {"fid": "fid", "kid": "kid", "is": "isc"}  # our name -> torch-fidelity's switch


def format_count(n: int) -> str:
    """Sample counts as they appear in metric keys: 50000 -> 50k, 2000 -> 2k, 500 -> 500."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_key(metric: str, extractor: str, num_samples: int) -> str:
    """`fid_inception_50k`: metric, feature extractor tag, number of generated samples."""
    return f"{metric}_{extractor}_{format_count(num_samples)}"


class _Images(Dataset):
    """Items of a tensor or of a Dataset of `(x, y)` pairs, through `transform`, as bare tensors."""

    def __init__(self, data: Tensor | Dataset, transform=None):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tensor:
        x = self.data[index]
        x = x[0] if isinstance(x, (tuple, list)) else x
        return x if self.transform is None else self.transform(x)


def _check_metrics(metrics: Sequence[str]) -> None:
    if not metrics or set(metrics) - set(QUALITY):
        raise ValueError(f"metrics={list(metrics)}: choose from {list(QUALITY)}")


def _as_dataset(data: Tensor | Dataset) -> Dataset:
    return _Images(data) if isinstance(data, Tensor) else data


def fidelity_metrics(
    input1: Tensor | Dataset,
    input2: Tensor | Dataset | None,
    *,
    feature_extractor: str,
    metrics: Sequence[str] = QUALITY,
    weights_path: str | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    isc_splits: int = 10,
    cache_dir: str | os.PathLike | None = None,
    input2_cache_name: str | None = None,
    batch_size: int = 64,
    cuda: bool | None = None,
    seed: int = 2020,
    verbose: bool = False,
) -> dict[str, float]:
    """torch_fidelity.calculate_metrics on inputs the extractor takes as they are: the one place
    its options are spelled (the callers above pass them through as `**options`).

    input1 holds the generated samples (IS is computed on it), input2 the reference (needed for
    FID and KID; cached as `input2_cache_name` when that and cache_dir are given). Returns
    'fid', 'kid', 'kid_std', 'is', 'is_std' for the requested metrics. kid_subset_size and
    isc_splits are capped by the number of samples (KID stays unbiased at any subset size).
    """
    _check_metrics(metrics)
    binary = {"fid", "kid"} & set(metrics)
    if binary and input2 is None:
        raise ValueError(f"{sorted(binary)} compare with a reference: pass the training split")
    n1, n2 = len(input1), len(input2) if input2 is not None else math.inf
    if n1 < 2 or n2 < 2:
        raise ValueError(f"FID/KID/IS need at least 2 samples per set; got {n1} and {n2}")
    kwargs = dict(
        input1=_as_dataset(input1),
        feature_extractor=feature_extractor,
        feature_extractor_weights_path=weights_path,
        cuda=torch.cuda.is_available() if cuda is None else cuda,
        batch_size=batch_size,
        kid_subsets=kid_subsets,
        kid_subset_size=int(min(kid_subset_size, n1, n2)),
        isc_splits=min(isc_splits, n1),
        rng_seed=seed,
        save_cpu_ram=True,  # num_workers=0: in-memory tensors need no worker processes
        verbose=verbose,
        cache=cache_dir is not None and input2_cache_name is not None,
        cache_root=None if cache_dir is None else str(cache_dir),
        **{_FLAGS[m]: True for m in metrics},
    )
    if binary:
        kwargs.update(input2=_as_dataset(input2), input2_cache_name=input2_cache_name)
    raw = torch_fidelity.calculate_metrics(**kwargs)
    names = {
        torch_fidelity.KEY_METRIC_FID: "fid",
        torch_fidelity.KEY_METRIC_KID_MEAN: "kid",
        torch_fidelity.KEY_METRIC_KID_STD: "kid_std",
        torch_fidelity.KEY_METRIC_ISC_MEAN: "is",
        torch_fidelity.KEY_METRIC_ISC_STD: "is_std",
    }
    return {names[k]: float(v) for k, v in raw.items() if k in names}


def sample_quality(
    samples: Tensor,
    reference: Tensor | Dataset | None,
    *,
    extractor: str = "inception",
    metrics: Sequence[str] = QUALITY,
    num_samples: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_name: str | None = None,
    inception_weights: str | os.PathLike | None = None,
    classifier: DomainClassifier | str | os.PathLike | None = None,
    **options,
) -> dict[str, float]:
    """FID/KID/IS of `samples` against `reference` (the training split), keyed by extractor and count.

    extractor="inception": torch-fidelity's Inception-v3; `inception_weights` is a local weights
    file, None = torch hub's copy or a download (offline: `InceptionWeightsUnavailable` says what
    to do). extractor="domain": the `classifier` from `train_or_load_classifier` (or its file);
    keys then carry its dataset tag (`fid_digits_2k`). The first `num_samples` samples are
    scored (None: all). With cache_dir and cache_name the reference features are cached.
    `options` (kid_subset_size, kid_subsets, isc_splits, batch_size, cuda, seed, verbose) go to
    `fidelity_metrics`.
    """
    if extractor not in EXTRACTORS:
        raise ValueError(f"extractor={extractor!r}: choose from {list(EXTRACTORS)}")
    _check_metrics(metrics)
    num_samples = len(samples) if num_samples is None else num_samples
    if num_samples > len(samples):
        raise ValueError(f"num_samples={num_samples} but only {len(samples)} samples were given")
    samples = samples[:num_samples].detach().cpu()
    if reference is not None:
        ref_shape = tuple(_Images(reference)[0].shape)
        if ref_shape != tuple(samples.shape[1:]):
            raise ValueError(
                f"samples have shape {tuple(samples.shape[1:])} but the reference images "
                f"{ref_shape}: generate at the dataset's resolution"
            )
    if extractor == "inception":
        weights = inception_weights_path(inception_weights)
        name, tag, ident = INCEPTION, "inception", f"inception-{file_digest(weights)}"
        rgb = True
    else:
        if classifier is None:
            raise ValueError(
                "extractor=domain needs classifier=: the model or checkpoint from "
                "diffusion_lab.metrics.train_or_load_classifier(datamodule, cache_dir)"
            )
        path = (
            classifier.checkpoint_path if isinstance(classifier, DomainClassifier) else classifier
        )
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(
                f"domain classifier checkpoint {path} not found: use the model returned by "
                "train_or_load_classifier (it is saved to cache_dir)"
            )
        weights = str(path)
        if isinstance(classifier, DomainClassifier):
            tag = classifier.name
        else:
            tag = DomainClassifier.load(weights)[0].name
        name, ident, rgb = DOMAIN, f"classifier-{file_digest(weights)}", False
    convert = functools.partial(to_uint8, rgb=rgb)
    values = fidelity_metrics(
        convert(samples),
        None if reference is None else _Images(reference, convert),
        feature_extractor=name,
        metrics=metrics,
        weights_path=weights,
        cache_dir=cache_dir,
        input2_cache_name=None if cache_name is None else f"{cache_name}-{ident}",
        **options,
    )
    out = {}
    for short, value in values.items():
        metric, _, suffix = short.partition("_")
        out[metric_key(metric, tag, num_samples) + (f"_{suffix}" if suffix else "")] = value
    return out


def evaluate_sample_quality(
    samples: Tensor,
    datamodule,
    cache_dir: str | os.PathLike,
    *,
    extractor: str = "inception",
    classifier_seed: int = 0,
    **kwargs,
) -> dict[str, float]:
    """`sample_quality` against `datamodule.train_set`, with every cache under `cache_dir`.

    extractor="domain" trains (once) or loads the dataset's classifier into cache_dir; the
    reference features go to `<cache_dir>/fidelity`. kwargs go to `sample_quality`.
    """
    datamodule.setup("fit")
    if extractor == "domain" and kwargs.get("classifier") is None:
        kwargs["classifier"], _ = train_or_load_classifier(
            datamodule, cache_dir, seed=classifier_seed
        )
    return sample_quality(
        samples,
        datamodule.train_set,
        extractor=extractor,
        cache_dir=Path(cache_dir) / "fidelity",
        cache_name=cache_key(datamodule),
        **kwargs,
    )
