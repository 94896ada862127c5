"""DomainClassifier: a small CNN trained on a dataset's own labels, the offline feature extractor.

Where Inception-v3 cannot be had (no network, no weights file) or does not fit (16x16 digits,
28x28 MNIST), FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) are computed on this
classifier's penultimate activations and IS (Salimans et al. 2016) on its logits; the metric key
then names the dataset instead of Inception (`fid_digits_2k`). Values are comparable only between
runs that use the same classifier file.

The classifier is trained on the training split with a fixed seed (CPU training is bit-for-bit
repeatable; CUDA is close), evaluated on the test split (the val split when test is empty), and
cached atomically as `<cache_dir>/classifier-<dataset key>.pt`: a plain dict that loads with
`torch.load(weights_only=True)`, holding the weights, the architecture and the test accuracy.

Shapes: x (B, C, H, W) in [-1, 1]; features (B, feature_dim); logits (B, num_classes).
"""

import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from diffusion_lab.data.statistics import cache_key
from diffusion_lab.io import atomic_torch_save

ARCH_VERSION = 1  # bump when DomainClassifier or its training changes: old cache files go stale


class DomainClassifier(nn.Module):
    """conv-conv-pool-conv-conv-avgpool(4x4) -> `feature_dim` ReLU features -> linear logits."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 16,
        feature_dim: int = 128,
        name: str = "domain",
    ):
        super().__init__()
        self.config = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            width=width,
            feature_dim=feature_dim,
            name=name,
        )
        self.name = name  # the dataset tag used in metric keys, e.g. "digits"
        self.checkpoint_path: Path | None = None  # set once saved or loaded
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * w * 16, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        # RMS of the training split's penultimate activations, set after training: features are
        # divided by it so that E|f|^2 / feature_dim = 1, the scale KID's kernel (x.y/d + 1)^3 assumes
        self.register_buffer("feature_scale", torch.ones(()))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled penultimate activations (B, feature_dim) and logits (B, num_classes)."""
        h = self.body(x)
        return h / self.feature_scale, self.head(h)

    def features(self, x: Tensor) -> Tensor:
        """Scaled penultimate activations (B, feature_dim): what FID and KID compare."""
        return self.body(x) / self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["DomainClassifier", dict]:
        """The classifier stored at `path` (eval mode, no grad) and the checkpoint's other entries."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
        model.requires_grad_(False).eval()
        model.checkpoint_path = Path(path)
        return model, {k: v for k, v in ckpt.items() if k not in ("state_dict", "config")}


def dataset_tag(datamodule) -> str:
    """Short dataset name for metric keys: `datamodule.name` (mnist) or the class (digits)."""
    name = getattr(datamodule, "name", None)
    if isinstance(name, str) and name:
        return name.lower().replace("-", "_")
    return type(datamodule).__name__.removesuffix("DataModule").lower() or "domain"


def default_epochs(num_train: int) -> int:
    """ceil(20k / N) epochs, clamped to 2..15: 14 on digits (1437 images), 2 on MNIST (57k)."""
    return max(2, min(15, math.ceil(20_000 / max(num_train, 1))))


def classifier_path(datamodule, cache_dir: str | os.PathLike, seed: int = 0, **hparams) -> Path:
    """Where `train_or_load_classifier` caches the classifier of this dataset and resolution."""
    key = cache_key(datamodule, classifier=ARCH_VERSION, seed=seed, **hparams)
    return Path(cache_dir) / f"classifier-{key}.pt"


@torch.no_grad()
def _feature_rms(model: DomainClassifier, dataset: Dataset, device: torch.device) -> Tensor:
    total, count = torch.zeros((), dtype=torch.float64), 0
    for x, _ in DataLoader(dataset, batch_size=256):
        h = model.body(x.to(device).float()).double()
        total += h.pow(2).sum().cpu()
        count += h.numel()
    return (total / count).sqrt().float().clamp(min=1e-12)


def _accuracy(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int) -> float:
    """Top-1 accuracy over `dataset` (torchmetrics, accumulated over batches)."""
    accuracy = MulticlassAccuracy(num_classes=model.head.out_features, average="micro").to(device)
    model.eval()
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            accuracy.update(model(x.to(device).float()), torch.as_tensor(y).to(device))
    return float(accuracy.compute())


def _train(
    model: DomainClassifier,
    train_set: Dataset,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    num_workers: int,
) -> None:
    """Adam with a cosine learning-rate decay; batches shuffled by a generator seeded by `seed`."""
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_set) > batch_size,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device).float()), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.inference_mode(False)  # callable from validation hooks, which run under inference mode
@torch.enable_grad()
def train_or_load_classifier(
    datamodule,
    cache_dir: str | os.PathLike,
    *,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 16,
    feature_dim: int = 128,
    device: str | torch.device | None = None,
    verbose: bool = True,
) -> tuple[DomainClassifier, float]:
    """The dataset's classifier and its test-split accuracy, trained once and cached on disk.

    The cache file is keyed by the dataset (class, name, resolution, split) and the arguments
    that change the weights (seed, epochs, width, feature_dim, lr, batch_size); `device` is not
    keyed. epochs=None: `default_epochs(len(train split))`. The model is returned on the CPU.
    """
    if len(datamodule.data_shape) != 3:
        raise ValueError(
            f"the domain feature extractor needs images; {type(datamodule).__name__} samples have "
            f"shape {tuple(datamodule.data_shape)}"
        )
    if not datamodule.num_classes:
        raise ValueError(
            f"the domain feature extractor trains a classifier on the labels, and "
            f"{type(datamodule).__name__} has none (num_classes=None): use the Inception extractor "
            "(with inception_weights=/path/to/weights when offline) for this dataset"
        )
    datamodule.setup("fit")
    epochs = default_epochs(len(datamodule.train_set)) if epochs is None else epochs
    hparams = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, width=width, feature_dim=feature_dim
    )
    path = classifier_path(datamodule, cache_dir, seed=seed, **hparams)
    if path.exists():
        model, meta = DomainClassifier.load(path)
        return model, float(meta["test_accuracy"])

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        model = DomainClassifier(
            datamodule.channels,
            datamodule.num_classes,
            width=width,
            feature_dim=feature_dim,
            name=dataset_tag(datamodule),
        )
    model.to(device)
    start = time.perf_counter()
    num_workers = getattr(datamodule, "num_workers", 0)
    _train(
        model,
        datamodule.train_set,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        num_workers=num_workers,
    )
    seconds = time.perf_counter() - start
    model.feature_scale.copy_(_feature_rms(model, datamodule.train_set, device))
    split = "test" if datamodule.test_set is not None and len(datamodule.test_set) else "val"
    held_out = datamodule.test_set if split == "test" else datamodule.val_set
    if held_out is None or len(held_out) == 0:
        raise ValueError(
            f"{type(datamodule).__name__} has empty test and val splits: the domain classifier's "
            "accuracy cannot be measured; set dataset.test_fraction or dataset.val_fraction > 0"
        )
    accuracy = _accuracy(model, held_out, device, batch_size=256)
    model.cpu().requires_grad_(False)
    atomic_torch_save(
        {
            "state_dict": model.state_dict(),
            "config": model.config,
            "test_accuracy": accuracy,
            "accuracy_split": split,
            "num_train": len(datamodule.train_set),
            "seed": seed,
            "epochs": epochs,
            "train_seconds": seconds,
        },
        path,
    )
    model.checkpoint_path = path
    if verbose:
        print(
            f"trained the {model.name} classifier for FID/KID/IS features in {seconds:.1f} s: "
            f"{split} accuracy {accuracy:.4f} -> {path}"
        )
    return model, accuracy
