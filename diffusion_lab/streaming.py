"""Many samples to disk in blocks: constant memory, resumable, shared by any number of ranks.

    store = SampleStore(folder, num_samples, block_size, format, settings)
    store.missing_blocks()        blocks not on disk yet (a rerun after an interruption resumes here)
    store.write_block(k, x)       block k = sample indices [k·B, min((k+1)·B, N)), x in [−1, 1]
    store.finish(labels)          assemble the final file; store.first(n) for a preview grid

Formats (`format=`):
    png   samples/000000.png ...: one 8-bit PNG per image, the folder EDM's fid.py and
          torch-fidelity read. A block is done when all its files exist (each renamed into place).
    npz   samples.npz: arr_0 (N, H, W, C) uint8 (+ arr_1 (N,) class labels), the batch ADM's
          evaluator suite reads; streamed from per-block shards into the zip, never held whole.
    pt    samples.pt: (N, *data_shape) float32, assembled in memory; for small sets.

Every block is a pure function of (settings, its indices) because samples are seeded per index
(diffusion_lab/seeds.py), so which rank writes a block, in which run, changes nothing. The
settings (checkpoint, sampler, seed, count...) are kept in sampling.json: resuming with other
settings is refused, since it would mix two sample sets in one folder.
Images are quantised as EDM and ADM do: round((x + 1) · 127.5), clipped to [0, 255].
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffusion_lab.io import TMP_SUFFIX, atomic_torch_save, atomic_write
from diffusion_lab.values import ConfigError

FORMATS = ("png", "npz", "pt")
MANIFEST = "sampling.json"


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [−1, 1] → (B, H, W, C) uint8."""
    x = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def from_uint8(a: np.ndarray) -> Tensor:
    """(B, H, W, C) uint8 → (B, C, H, W) float in [−1, 1]."""
    return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).float() / 127.5 - 1


class SampleStore:
    def __init__(
        self, folder, num_samples: int, block_size: int, format: str, settings: dict, shape
    ):
        if format not in FORMATS:
            raise ConfigError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
        if format in ("png", "npz") and len(shape) != 3:
            raise ConfigError(
                f"format={format} writes images; this model generates data of shape "
                f"{tuple(shape)}: use format=pt"
            )
        if format == "png" and shape[0] not in (1, 3):
            raise ConfigError(f"format=png writes 1- or 3-channel images, not {shape[0]}: use npz")
        if block_size < 1 or num_samples < 1:
            raise ConfigError(
                f"batch_size and num_samples must be >= 1 ({block_size}, {num_samples})"
            )
        self.folder = Path(folder)
        self.num_samples, self.block_size, self.format = num_samples, block_size, format
        self.shape = tuple(shape)
        self.settings = {**settings, "num_samples": num_samples, "format": format}
        if format != "png":  # shard files are cut by the batch size; PNG files are per index
            self.settings["batch_size"] = block_size
        self.num_blocks = math.ceil(num_samples / block_size)

    # -- where things go -------------------------------------------------------------------------
    @property
    def final(self) -> Path:
        return (
            self.folder / {"png": "samples", "npz": "samples.npz", "pt": "samples.pt"}[self.format]
        )

    def block(self, k: int) -> range:
        return range(k * self.block_size, min((k + 1) * self.block_size, self.num_samples))

    def _png(self, i: int) -> Path:
        return self.final / f"{i:06d}.png"

    def _shard(self, k: int) -> Path:
        return self.folder / "blocks" / f"{k:06d}.{'npy' if self.format == 'npz' else 'pt'}"

    # -- the settings a folder holds ------------------------------------------------------------
    def claim(self) -> None:
        """Write sampling.json, or check it against this run's settings (a resume)."""
        path = self.folder / MANIFEST
        if path.is_file():
            try:
                was = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise ConfigError(
                    f"{path} is unreadable ({err}): remove it to start afresh"
                ) from None
            differs = sorted(
                k for k in {*was, *self.settings} if was.get(k) != self.settings.get(k)
            )
            if differs:
                show = ", ".join(
                    f"{k}: {was.get(k)!r} there, {self.settings.get(k)!r} now" for k in differs
                )
                raise ConfigError(
                    f"{self.folder} holds samples made with other settings ({show}): resume with "
                    "the same settings, or sample into another hydra.run.dir"
                )
            return
        text = json.dumps(self.settings, indent=2, sort_keys=True)
        atomic_write(path, lambda f: f.write(text.encode()))

    # -- blocks ----------------------------------------------------------------------------------
    def done(self, k: int) -> bool:
        if self.format == "png":
            return all(self._png(i).is_file() for i in self.block(k))
        return self._shard(k).is_file()

    def missing_blocks(self) -> list[int]:
        if self.format != "png" and self.final.is_file():  # finished earlier
            return []
        return [k for k in range(self.num_blocks) if not self.done(k)]

    def write_block(self, k: int, x: Tensor) -> None:
        if tuple(x.shape) != (len(self.block(k)), *self.shape):
            raise ValueError(
                f"block {k} needs shape {(len(self.block(k)), *self.shape)}, got {tuple(x.shape)}"
            )
        if self.format == "pt":
            atomic_torch_save(x.detach().float().cpu().contiguous(), self._shard(k))
            return
        images = to_uint8(x)
        if self.format == "npz":
            atomic_write(self._shard(k), lambda f: np.save(f, images))
            return
        self.final.mkdir(parents=True, exist_ok=True)
        for i, a in zip(self.block(k), images):
            # renamed into place, not fsynced: an interrupted run leaves whole files or none
            path = self._png(i)
            tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(tmp, format="PNG")
            os.replace(tmp, path)

    # -- the result ------------------------------------------------------------------------------
    def finish(self, labels: Tensor | None = None) -> Path:
        """Assemble the final file from the block shards (then removed); PNG folders are final."""
        missing = self.missing_blocks()
        if missing:
            raise RuntimeError(f"blocks {missing[:5]}... are not written yet")
        if self.format == "png" or self.final.is_file():
            return self.final
        if self.format == "pt":
            atomic_torch_save(
                torch.cat([self._read_shard(k) for k in range(self.num_blocks)]), self.final
            )
        else:
            atomic_write(self.final, lambda f: self._write_npz(f, labels))
        for k in range(self.num_blocks):
            self._shard(k).unlink()
        (self.folder / "blocks").rmdir()
        return self.final

    def _write_npz(self, f, labels: Tensor | None) -> None:
        """np.savez's layout (a stored zip of .npy files), written shard by shard."""
        c, h, w = self.shape
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as member:
                header = {
                    "descr": "|u1",
                    "fortran_order": False,
                    "shape": (self.num_samples, h, w, c),
                }
                np.lib.format.write_array_header_1_0(member, header)
                for k in range(self.num_blocks):
                    member.write(np.ascontiguousarray(self._read_shard(k)).tobytes())
            if labels is not None:
                with zf.open("arr_1.npy", "w") as member:
                    np.lib.format.write_array(member, labels.cpu().numpy().astype(np.int64))

    def _read_shard(self, k: int):
        """Block k's shard as written (pt: float32 (B, *shape) tensor; npz: uint8 (B, H, W, C)
        array), read without unpickling; a file that is not that gets one line (a ConfigError)."""
        path, n = self._shard(k), len(self.block(k))
        c, *hw = self.shape if self.format == "npz" else (None,)
        try:
            if self.format == "pt":
                shard = torch.load(path, weights_only=True)
                ok = isinstance(shard, Tensor) and shard.dtype == torch.float32
                ok = ok and tuple(shard.shape) == (n, *self.shape)
            else:
                shard = np.load(path, allow_pickle=False)
                ok = shard.dtype == np.uint8 and shard.shape == (n, *hw, c)
        except Exception as err:  # truncated, not a tensor/array file, pickled objects...
            raise ConfigError(f"{path} is not readable ({err}): remove it and rerun") from None
        if not ok:
            raise ConfigError(f"{path} does not hold block {k} of this run: remove it and rerun")
        return shard

    def first(self, n: int) -> Tensor:
        """The first n samples as floats in [−1, 1] (for the preview grid), read back from disk."""
        n = min(n, self.num_samples)
        if self.format == "png":
            return from_uint8(np.stack([_read_png(self._png(i)) for i in range(n)]))
        if self.format == "pt":
            return torch.load(self.final, weights_only=True, mmap=True)[:n].clone()
        with zipfile.ZipFile(self.final) as zf, zf.open("arr_0.npy") as member:
            np.lib.format.read_magic(member)
            shape, _, _ = np.lib.format.read_array_header_1_0(member)
            count = n * int(np.prod(shape[1:]))
            return from_uint8(np.frombuffer(member.read(count), np.uint8).reshape(n, *shape[1:]))


def _read_png(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path))
    return a[..., None] if a.ndim == 2 else a
