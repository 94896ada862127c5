"""ImageFolderDataModule: every image under a folder, recursively (png, jpg, jpeg, bmp, webp).

Images are converted to RGB (L when channels=1), resized (shorter side) and center-cropped to
`image_size`, and scaled to [-1, 1]. The label is 0, or with `use_subfolder_labels` the index of
the top-level subfolder holding the image (sorted by name). Val (and optionally test) images are a
fixed seeded fraction; when the test split is empty (test_fraction=0) it is the val split.

What counts as a bad file. At setup every file is opened and fully decoded (`load()`; `verify()`
misses truncated JPEGs): empty, unreadable (not an image), truncated or otherwise undecodable
files are bad, and so are degenerate images with a side under `MIN_SIDE` px. Everything else is
usable: any mode (grayscale, palette, RGBA, 16-bit, CMYK) and any size or aspect ratio; images
smaller than `image_size` are upscaled, as torchvision's Resize does. Transparent pixels are
composited on white (PIL's plain convert would expose whatever colour they hold, often black),
and 16-bit images are scaled to 8 bits (PIL's convert would clip them at 255, i.e. white).
By default setup fails with one error listing every bad file (the first `SHOW_BAD`); with
`skip_corrupt=true` they are left out with one warning.

The check decodes each file once (per core, about 0.2 ms for a small PNG and 12 ms for a 1024^2
one) on up to 8 threads, with a tqdm bar when over 300 files need it. With `cache_dir` set (the
YAML uses paths.cache_dir), verdicts are kept in `<cache_dir>/image_folder_check-<hash of
data_dir>.json`, keyed by (relative path, size, mtime): later runs re-check only new or changed
files.
"""

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms
from tqdm import tqdm

from diffusion_lab.data.datamodule import ImageDataModule, split_indices

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MIN_SIDE = 2  # px; narrower images (1-px strips, tracking pixels) are bad files
SHOW_BAD = 20  # bad files listed in the error; the rest are counted
CHECK_VERSION = 1  # bump when check_image changes, to invalidate cached verdicts


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` as 8-bit `mode` ("RGB" or "L"): 16-bit scaled down, transparency on white."""
    if image.mode.startswith("I"):  # I, I;16, I;16B...: 16-bit grayscale
        image = Image.fromarray((np.asarray(image) / 257).round().clip(0, 255).astype(np.uint8))
    if "A" in image.getbands() or "transparency" in image.info:
        white = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert(mode)


def check_image(path: Path) -> str | None:
    """Why the image file at `path` cannot be used, or None if it can."""
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything: the only way to catch truncated files
            width, height = image.size
    except UnidentifiedImageError:
        return "not an image (or an unsupported format)"
    except Exception as e:
        return "truncated" if "truncated" in str(e).lower() else f"unreadable ({e})"
    if min(width, height) < MIN_SIDE:
        return f"degenerate size {width}x{height} (a side under {MIN_SIDE} px)"
    return None


def check_images(files: list[Path], root: Path, cache_dir: str | None) -> dict[Path, str]:
    """The bad files among `files` (all under `root`) with their reasons, cached in cache_dir."""
    stats = {p: p.stat() for p in files}
    key = {p: [str(p.relative_to(root)), s.st_size, s.st_mtime_ns] for p, s in stats.items()}
    cache_file = None
    cached: dict[tuple, str | None] = {}
    if cache_dir is not None:
        digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        cache_file = Path(cache_dir).expanduser() / f"image_folder_check-{digest}.json"
        try:
            saved = json.loads(cache_file.read_text())
            if saved["version"] == CHECK_VERSION:
                cached = {tuple(k): reason for k, reason in saved["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no or unreadable cache: check everything
    todo = [p for p in files if tuple(key[p]) not in cached]
    if todo:
        progress = dict(total=len(todo), desc="checking images", unit="img")
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            results = zip(todo, pool.map(check_image, todo))
            for path, reason in tqdm(results, disable=len(todo) < 300, **progress):
                cached[tuple(key[path])] = reason
        if cache_file is not None:
            entries = [[key[p], cached[tuple(key[p])]] for p in files]
            tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps({"version": CHECK_VERSION, "files": entries}))
                os.replace(tmp, cache_file)
            except OSError as e:
                warnings.warn(f"cannot write the image check cache {cache_file}: {e}", stacklevel=1)
    verdicts = {p: cached[tuple(key[p])] for p in files}
    return {p: reason for p, reason in verdicts.items() if reason is not None}


def describe(bad: dict[Path, str], limit: int) -> str:
    """One `path: reason` line per bad file, the first `limit` of them, then `and N more`."""
    lines = [f"  {path}: {reason}" for path, reason in list(bad.items())[:limit]]
    if len(bad) > limit:
        lines.append(f"  and {len(bad) - limit} more")
    return "\n".join(lines)


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
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                x = self.transform(to_mode(image, self.mode))
        except OSError as e:  # it passed the check at setup, so it changed since
            raise OSError(f"cannot load {path} (changed since setup?): {e}") from e
        return x, torch.tensor(self.labels[index], dtype=torch.int64)


class ImageFolderDataModule(ImageDataModule):
    """Images from `data_dir` at `image_size` x `image_size` with 3 (RGB) or 1 (L) channels.

    Bad files (see the module docstring) fail `setup` with a list of them, or with
    `skip_corrupt=True` are left out with a warning. `cache_dir` (None = no cache) keeps the
    per-file check results between runs.
    """

    def __init__(
        self,
        data_dir: str,
        image_size: int = 64,
        channels: int = 3,
        use_subfolder_labels: bool = False,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
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
        self.skip_corrupt = skip_corrupt
        self._cache_dir = cache_dir  # private: where the check is cached does not change the data
        self._validate()

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (self._channels, self._image_size, self._image_size)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.use_subfolder_labels else None

    @cached_property
    def files(self) -> list[Path]:
        """Every image file under data_dir, sorted; raises FileNotFoundError if there are none."""
        hint = (
            f"put your images ({', '.join(EXTENSIONS)}, in any subfolders) there, or point "
            "paths.data_dir=... (or dataset.data_dir=...) at the folder holding them"
        )
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"image folder data_dir={self.data_dir} does not exist: {hint}")
        every = sorted(p for p in self.data_dir.rglob("*") if p.is_file())
        files = [p for p in every if p.suffix.lower() in EXTENSIONS]
        if not files:
            others = f" ({len(every)} files of other types, e.g. {every[0].name})" if every else ""
            raise FileNotFoundError(
                f"no images found under data_dir={self.data_dir}{others}: {hint}"
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

    @cached_property
    def usable_files(self) -> list[Path]:
        """`files` minus the bad ones (skip_corrupt=true), or an error listing the bad ones."""
        bad = check_images(self.files, self.data_dir, self._cache_dir)
        if not bad:
            return self.files
        n, total = len(bad), len(self.files)
        if not self.skip_corrupt:
            raise ValueError(
                f"{n} of {total} image files under data_dir={self.data_dir} cannot be used:\n"
                f"{describe(bad, SHOW_BAD)}\n"
                f"Remove or fix them, or set dataset.skip_corrupt=true to train on the other "
                f"{total - n}."
            )
        if n == total:
            raise ValueError(
                f"all {total} image files under data_dir={self.data_dir} are bad, nothing is left "
                f"to train on (dataset.skip_corrupt=true skipped them all):\n{describe(bad, 5)}"
            )
        warnings.warn(
            f"dataset.skip_corrupt=true: skipping {n} of {total} image files under "
            f"data_dir={self.data_dir}, training on the other {total - n}:\n{describe(bad, 5)}",
            stacklevel=1,  # here: the callers (cached_property, setup, Lightning) say less
        )
        return [p for p in self.files if p not in bad]

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        files = self.usable_files
        if self.use_subfolder_labels:
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = [index[p.relative_to(self.data_dir).parts[0]] for p in files]
        else:
            labels = [0] * len(files)
        parts = split_indices(len(files), self.val_fraction, self.test_fraction, self.split_seed)
        mode = "RGB" if self._channels == 3 else "L"
        train, val, test = (
            ImageFiles([files[i] for i in idx], [labels[i] for i in idx], mode, self._image_size)
            for idx in parts
        )
        return train, val, (test if len(test) else val)
