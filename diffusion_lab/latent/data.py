"""LatentDataModule: an image datamodule's splits, encoded once by a LatentCodec and cached.

Each split is encoded with the posterior mean μ_φ(x) in one pass (no augmentation: a flip of an
image is not a flip of its latent, so `hflip` is refused) and cached at

    <cache_dir>/latents/<image cache key>-<autoencoder digest>.pt

The key names the image data (dataset, size, split; data/statistics.py's `cache_key`) and the
autoencoder's weights, so training another autoencoder, or changing the dataset, encodes anew;
an unreadable or inconsistent cache file is re-encoded, never trusted. The cache holds unscaled
latents; the scale s (codec.py) is fitted on the training split at `setup` and applied on the
way out, so `latent_scale` never invalidates it.

The images stay reachable as `.pixels`: sample-quality metrics score decoded samples against
them, and `data_shape` / `num_classes` are those of the latents / the images.
Shapes: latents (N, *codec.latent_shape), labels (N,) int64.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from diffusion_lab.data.datamodule import ImageDataModule
from diffusion_lab.data.statistics import cache_key
from diffusion_lab.io import atomic_torch_save
from diffusion_lab.latent.codec import LatentCodec

SPLITS = ("train", "val", "test")
ENCODE_BATCH = 256


class LatentDataModule(ImageDataModule):
    def __init__(
        self,
        images: ImageDataModule,
        codec: LatentCodec,
        cache_dir: str | Path,
        scale: float | None = None,
        fit_scale: bool = True,
    ):
        super().__init__(
            batch_size=images.batch_size,
            num_workers=0,  # the latents are one tensor in memory
            hflip=False,
            seed=images.seed,
            drop_last=images.drop_last,
            sigma_data=images.sigma_data,
        )
        if images.hflip:
            raise ValueError(
                "dataset.hflip=true flips images, but a latent run trains on latents encoded once "
                "(a flipped image's latent is not the flipped latent): set dataset.hflip=false"
            )
        self.images, self.codec = images, codec
        self._cache_dir = Path(cache_dir)
        # public plain attributes: data/statistics.py's cache key of this datamodule covers them
        self.image_key = cache_key(images)
        self.autoencoder_digest = codec.digest()
        self.latent_scale = "fitted" if scale is None else float(scale)
        self._scale, self._fit_scale = scale, fit_scale
        self._validate()

    @property
    def pixels(self) -> ImageDataModule:
        return self.images

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.codec.latent_shape

    @property
    def num_classes(self) -> int | None:
        return self.images.num_classes

    @property
    def cache_path(self) -> Path:
        return self._cache_dir / "latents" / f"{self.image_key}-{self.autoencoder_digest}.pt"

    def _encode(self, dataset: Dataset, desc: str) -> tuple[Tensor, Tensor]:
        zs, ys = [], []
        for start in tqdm(range(0, len(dataset), ENCODE_BATCH), desc=desc, leave=False):
            pairs = [dataset[i] for i in range(start, min(start + ENCODE_BATCH, len(dataset)))]
            x = torch.stack([p[0] for p in pairs])
            zs.append(self.codec.unscaled(x.to(self.codec.scale.device)).float().cpu())
            ys.append(torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.int64))
        return torch.cat(zs), torch.cat(ys)

    def _read_cache(self, sizes: dict[str, int]) -> dict | None:
        """The cached latents if the file holds exactly what this datamodule would encode."""
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            for split, n in sizes.items():
                z, y = saved[split]
                ok = (
                    tuple(z.shape) == (n, *self.data_shape)
                    and tuple(y.shape) == (n,)
                    and z.dtype == torch.float32
                    and y.dtype == torch.int64
                    and bool(torch.isfinite(z).all())
                )
                if not ok:
                    raise ValueError(f"split {split!r} does not match the data")
            return {split: tuple(saved[split]) for split in sizes}
        except Exception as err:  # truncated, foreign or edited file: encode again
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:160]
            warnings.warn(f"latent cache {path} is unusable ({reason}); re-encoding", stacklevel=2)
            return None

    def _build(self) -> tuple[Dataset, Dataset, Dataset]:
        self.autoencoder_digest = self.codec.digest()  # the weights may have been loaded since
        self.images.setup("fit")
        sets = dict(zip(SPLITS, (self.images.train_set, self.images.val_set, self.images.test_set)))
        latents = self._read_cache({s: len(d) for s, d in sets.items()})
        if latents is None:
            print(f"encoding {type(self.images).__name__} into latents -> {self.cache_path}")
            latents = {s: self._encode(d, f"encoding {s}") for s, d in sets.items()}
            atomic_torch_save(latents, self.cache_path)
        if self._scale is not None:
            self.codec.scale.fill_(self._scale)
        elif self._fit_scale:  # else: a restored model keeps the scale its checkpoint holds
            self.codec.fit_scale(latents["train"][0], self.sigma_data)
        scale = float(self.codec.scale)
        return tuple(TensorDataset(scale * latents[s][0], latents[s][1]) for s in SPLITS)
