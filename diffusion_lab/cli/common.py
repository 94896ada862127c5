"""What the entry points share: recording the user's choices, user-facing errors, sampling output.

Errors a user can act on end the process with one line on stderr (`error: ...`) and exit status 2:
`user_errors()` maps the project's error types, a full disk and a missing mandatory value to that
line. SIGTERM outside training (the test pass, sampling, evaluation) ends the process at once with
one line and status 143; during training Lightning's pre-emption path saves last.ckpt first
(callbacks/last_checkpoint.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import MissingMandatoryValue
from PIL import Image
from pytorch_lightning.utilities.exceptions import SIGTERMException

from diffusion_lab.checkpoint import CheckpointError, load_checkpoint
from diffusion_lab.groups import choice
from diffusion_lab.io import DiskFullError
from diffusion_lab.metrics import InceptionWeightsUnavailable
from diffusion_lab.sampling import generate_ema, require_finite_samples
from diffusion_lab.values import ConfigError
from diffusion_lab.visualize import save_samples

# Lightning's progress notes ("GPU available: ...") are information, not errors: to stdout, so a
# failing command's stderr holds its error line.
for _name in ("pytorch_lightning", "lightning_fabric"):
    for _handler in logging.getLogger(_name).handlers:
        if isinstance(_handler, logging.StreamHandler) and _handler.stream is sys.stderr:
            _handler.setStream(sys.stdout)

USER_ERRORS = (
    CheckpointError,
    ConfigError,
    ValueError,
    FileNotFoundError,
    FloatingPointError,
    InceptionWeightsUnavailable,
    Image.DecompressionBombError,
)


def record_choices(cfg: DictConfig) -> None:
    """Store `group=option` choices in the config so errors and checkpoints can name them."""
    choices = {
        k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")
    }
    with open_dict(cfg):
        cfg.choices = choices


def pin_job_for_ddp_workers() -> None:
    """Make Lightning's DDP launcher re-run exactly this job, in this job's directory.

    With `strategy=ddp` Lightning starts ranks > 0 by re-running the script with `sys.argv` plus
    `hydra.run.dir=<HydraConfig.run.dir>`. Under `-m` (or a sweeper config) sys.argv is the whole
    sweep, so every worker would launch the sweep again and write new run directories. Here the
    workers get this job's own overrides in single-run mode, and run.dir is pinned to the resolved
    output directory (also what keeps a `${now:...}` run directory the same in every process)."""
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]


@contextmanager
def one_ddp_job():
    """Leave no DDP state behind for the next job of a multirun in this process.

    Lightning's DDP launcher writes MASTER_PORT, LOCAL_RANK, WORLD_SIZE... into os.environ and
    initialises a process group here; left in place, the next job would think its processes were
    started externally and wait on a group whose workers have exited."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


def fail(err: Exception | str, status: int = 2) -> None:
    """Print an actionable error as one line, without a traceback, and exit with `status`."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    sys.exit(status)


class Terminated(Exception):
    """SIGTERM arrived outside training (during the test pass, sampling or evaluation)."""


@contextmanager
def user_errors():
    """Turn the errors a user can act on into one line on stderr (exit 2; Terminated: exit 143).
    Anything else is a bug and keeps its traceback."""
    try:
        yield
    except SIGTERMException:  # Lightning's pre-emption exit is SystemExit(None), status 0: a
        # script or scheduler would take the stopped run for a finished one (last.ckpt is saved)
        sys.exit(128 + signal.SIGTERM)
    except Terminated as err:
        fail(err, status=128 + signal.SIGTERM)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", None) or "a required value"
        fail(f"{key} is required: pass {key}=... on the command line")
    except DiskFullError as err:
        fail(f"{err.strerror}: free space there, or point hydra.run.dir at a disk with room")
    except USER_ERRORS as err:
        fail(err)


@contextmanager
def terminate_on_sigterm(after: str):
    """Within this block SIGTERM raises Terminated (one line, exit 143 via user_errors) saying
    what was left (`after`). Lightning's own handler, installed during fit and test, calls this
    one too, so a test pass stops at once instead of exiting 0 between batches."""

    def on_sigterm(signum, frame):
        raise Terminated(f"terminated by SIGTERM; {after}")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sample_and_save(
    module, num_samples: int, seed: int, out: Path, sampler=None, x_T=None, **generate_kwargs
) -> dict:
    """Generate with the EMA weights (progress bar), save PNG grid + tensor; return timing facts.
    `generate_kwargs` (cond, guidance, guidance_rescale, datamodule) go to `sampling.generate_ema`.
    Seeds are per sample index, so `python sample.py ckpt_path=... seed=S` draws the same images."""
    start = time.perf_counter()
    x, nfe = generate_ema(
        module,
        num_samples,
        seed=seed,
        sampler=sampler,
        progress=True,
        x_T=x_T,
        indices=range(num_samples),
        **generate_kwargs,
    )
    seconds = time.perf_counter() - start
    require_finite_samples(x)
    grid = save_samples(x, out / "samples.png")
    torch.save(x.cpu(), out / "samples.pt")
    return {
        "num_samples": num_samples,
        "seed": seed,
        "nfe": nfe,
        "seconds": seconds,
        "images_per_s": num_samples / seconds,
        "grid": str(grid),
        "tensor": str(out / "samples.pt"),
    }


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def checked_resume_path(cfg: DictConfig, model_keys, kind=None) -> str | None:
    """The checkpoint a run resumes from: ckpt_path when given; else, with auto_resume, the run
    directory's own last.ckpt; None for a fresh start. The file must load (CheckpointError:
    missing, truncated or foreign), pass `kind(saved config, path)` (which raises when it is the
    wrong kind of checkpoint), and agree with this run on every key of `model_keys`."""
    path = cfg.ckpt_path
    if path is None:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not (cfg.get("auto_resume", True) and last.is_file()):
            return None
        path = str(last)
        print(f"resuming from {last} (auto_resume; auto_resume=false starts afresh)")
    saved, _, _ = load_checkpoint(path)
    if kind is not None:
        kind(saved, path)
    for key in model_keys:
        was, now = (_plain(OmegaConf.select(c, key)) for c in (saved, cfg))
        if was != now:
            differs = (
                f"a different `{key}` config than this run's {choice(cfg, key.split('.')[0])}"
                if isinstance(now, dict)
                else f"{key}={was}, this run has {key}={now}"
            )
            raise ConfigError(
                f"{path} was trained with {differs}: resume with the overrides that run used "
                "(its .hydra/overrides.yaml), or start a new run without ckpt_path"
            )
    return str(path)
