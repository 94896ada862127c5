"""Atomic file writes (checkpoints, caches, results.json) and the clean-up of interrupted ones.

Floor 1: imports nothing of the package. Every write goes to a temporary file `.<name>.<random>.tmp`
beside its target, is flushed and fsynced, then renamed over the target: os.replace within one
filesystem is atomic, so readers see the old file or the new one, never a part. (Lightning's own
save goes through an fsspec transaction whose temporary file lives in /tmp, and moving it across
filesystems is a copy that a kill can cut short.) A process killed mid-write leaves its temporary
file behind; `remove_orphans` deletes those at the next start in the same run directory.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

TMP_SUFFIX = ".tmp"


class DiskFullError(OSError):
    """ENOSPC while writing a file: names the file, so the user knows which disk to free."""


def _is_disk_full(err: BaseException, folder: Path) -> bool:
    """ENOSPC, or torch.save's zip writer failing (it reports any write error as a RuntimeError)
    while the folder's filesystem has next to no space left."""
    while err is not None:
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err):
            return True
        if "PytorchStreamWriter failed" in str(err) or "file write failed" in str(err):
            return shutil.disk_usage(folder).free < 2**20
        err = err.__cause__ or err.__context__
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if _is_disk_full(err, path.parent):
            raise DiskFullError(errno.ENOSPC, f"No space left on device writing {path}") from None
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically (see the module docstring)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: str | Path, obj: dict) -> Path:
    """JSON (indented; tensors and numpy scalars as floats), atomically."""
    text = json.dumps(obj, indent=2, default=float)
    return atomic_write(path, lambda f: f.write(text.encode()))


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporary files interrupted atomic writes left under `folder`; returns them.
    Call only while no other process can be writing there (train.py holds the run lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    orphans = [p for p in folder.rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans
