"""One process per run directory: a Hydra callback that locks the run directory before Hydra
writes anything into it.

Two commands started with the same `hydra.run.dir` would interleave their logs, config and
checkpoints and both "succeed". `RunLock.on_run_start` runs before Hydra saves `.hydra/`, takes an
exclusive `flock` on `<run dir>/.lock` (the kernel releases it when the process dies, so a killed
run never leaves a stale lock) and, if another process holds it, prints one line and exits 2 —
so a refused command leaves the other run's `.hydra/` as it was. With the lock held, temporary
files that a killed atomic write left behind (io.remove_orphans) are deleted. Under `-m` each job
locks its own directory at job start. DDP worker processes (LOCAL_RANK/RANK > 0, which Lightning
starts in the same run directory, torchrun and srun tasks) share rank 0's lock and take none.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from diffusion_lab.io import remove_orphans

_held: dict[str, int] = {}  # run dir -> open file descriptor holding its lock (for the process)


def _is_worker() -> bool:
    """A DDP process other than global rank 0 (Lightning's launcher, torchrun, srun tasks)."""
    keys = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return any(os.environ.get(k, "0") not in ("", "0") for k in keys)


def lock_run_dir(run_dir: str | Path) -> None:
    """Lock `run_dir` for this process, or print why not and exit 2."""
    run_dir = Path(run_dir).resolve()
    if str(run_dir) in _held or _is_worker():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        print(
            f"error: another process is running in {run_dir} (it holds {run_dir / '.lock'}): "
            "wait for it to finish, or give this run its own hydra.run.dir",
            file=sys.stderr,
        )
        sys.exit(2)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[str(run_dir)] = fd
    for orphan in remove_orphans(run_dir):
        print(f"removed {orphan} (left by an interrupted write)", file=sys.stderr)


def release_all() -> None:
    """Release every lock this process holds (tests that run several CLIs in one process)."""
    for fd in _held.values():
        os.close(fd)
    _held.clear()


class RunLock(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        lock_run_dir(config.hydra.run.dir)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        lock_run_dir(config.hydra.runtime.output_dir)  # multirun jobs; a no-op for a locked run
