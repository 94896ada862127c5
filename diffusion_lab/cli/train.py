"""`python train.py [group=option ...] [key=value ...]`: train, test, sample, write results.json."""

import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.build import ConfigError, build, build_module
from diffusion_lab.callbacks import Throughput
from diffusion_lab.callbacks.throughput import peak_memory_mb
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import (
    checked_resume_path,
    one_ddp_job,
    pin_job_for_ddp_workers,
    record_choices,
    sample_and_save,
    terminate_on_sigterm,
    user_errors,
)
from diffusion_lab.metrics.names import metric_of
from diffusion_lab.metrics.report import evaluate
from diffusion_lab.results import versions, write_json
from diffusion_lab.values import TRAIN_KEYS, check_values


def train(cfg: DictConfig) -> dict:
    """Train, test and sample as `cfg` says; returns what results.json holds (rank 0)."""
    check_values(cfg, TRAIN_KEYS)  # before the seed is used (build checks them for every caller)
    pl.seed_everything(cfg.seed, workers=True)
    parts = build(cfg)
    module = build_module(cfg, parts)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(lg) for lg in cfg.logger.values() if lg is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    start = time.perf_counter()
    trainer.fit(module, datamodule=parts.datamodule, ckpt_path=resume_from(cfg), weights_only=True)
    fit_seconds = time.perf_counter() - start
    out = Path(cfg.paths.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    with terminate_on_sigterm(
        f"training finished and {last} holds its final state, but "
        "results.json was not written: rerun the same command to test, "
        "sample and evaluate it"
    ):
        return _after_fit(cfg, parts, module, trainer, fit_seconds)


def _after_fit(cfg, parts, module, trainer, fit_seconds) -> dict:
    """Test pass, final samples and evaluation, results.json (rank 0)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(
        {k: float(v) for k, v in trainer.test(module, datamodule=parts.datamodule)[0].items()}
    )
    if trainer.global_rank != 0:
        return {"metrics": metrics}

    out = Path(cfg.paths.output_dir)
    # restoration-only processes (snow) restore degraded validation images
    sampling = sample_and_save(
        module, cfg.num_samples, cfg.seed, out / "samples", datamodule=parts.datamodule
    )
    evaluation = None
    if cfg.evaluation.metrics:
        evaluation = evaluate(
            module,
            parts.datamodule,
            OmegaConf.to_container(cfg.evaluation, resolve=True),
            cfg.paths.cache_dir,
            floor=cfg.evaluation.real_floor,
        )
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    images_per_s = throughput.images_per_s if throughput and trainer.global_step else None
    results = {
        "metrics": metrics,
        "global_step": trained_steps(trainer, out / "checkpoints" / "last.ckpt"),
        "fit_seconds": fit_seconds,
        "train_images_per_s": images_per_s or metrics.get("train/images_per_s"),
        "sampling": sampling,
        "evaluation": evaluation,
        "peak_memory_mb": peak_memory_mb(module.device),
        "device": str(module.device)
        + (f" ({torch.cuda.get_device_name()})" if module.device.type == "cuda" else ""),
        "precision": str(trainer.precision),
        "checkpoint": str(out / "checkpoints" / "last.ckpt"),
        "choices": dict(cfg.get("choices", {})),
        "versions": versions(),
    }
    write_json(out / "results.json", results)
    print(
        f"\nrun directory: {out}\n  samples: {sampling['grid']}\n  results: {out / 'results.json'}"
    )
    if evaluation:
        shown = {
            k: v for k, v in evaluation.items() if metric_of(k.removeprefix("real_")) is not None
        }
        print("  " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items() if isinstance(v, float)))
    return results


MODEL_KEYS = (
    "dataset._target_",
    "dataset.image_size",
    "dataset.channels",
    "backbone",
    "degradation",
    "basis",
    "precond",
    "latent",
    "latent_scale",
    "lowres",  # a cascade's super-resolution stage: its condition and network input
)


def resume_from(cfg: DictConfig) -> str | None:
    """ckpt_path (or, with auto_resume, the run's own last.ckpt), checked against this run's
    MODEL_KEYS: what the weights depend on (the data's kind and shape, the network, the process)."""
    return checked_resume_path(cfg, MODEL_KEYS)


def trained_steps(trainer: pl.Trainer, last_ckpt: Path) -> int:
    """Optimizer steps taken, checked against last.ckpt (DESIGN §4: results.json's step is the
    step of the checkpoint it points to). Under ddp_spawn the fit ran in child processes and this
    process's trainer still says 0, so the checkpoint (written by rank 0 at the end) is asked."""
    saved = int(
        torch.load(last_ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    )
    if trainer.global_step not in (0, saved):
        raise RuntimeError(
            f"{last_ckpt} is at step {saved} but training ended at step {trainer.global_step}: "
            "last.ckpt is not the final state (a bug: please report it)"
        )
    return saved


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    record_choices(cfg)
    pin_job_for_ddp_workers()
    with user_errors(), one_ddp_job():
        results = train(cfg)
        return optimized_value(results, cfg.optimized_metric, sweep=_in_sweep())


def _in_sweep() -> bool:
    """A sweep reads train.py's return value: -m / a sweeper config run in MULTIRUN mode."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def optimized_value(results: dict, name: str | None, sweep: bool = True) -> float | None:
    """The value Hydra's sweepers optimise: a logged metric or a key of the final evaluation.
    Only a sweep needs it: a single run that did not report it (it never validated, say) gets a
    warning, not a failed exit after results.json was written."""
    if not name or "global_step" not in results:  # nothing asked, or a DDP worker (rank > 0)
        return None
    found = {**results["metrics"], **(results["evaluation"] or {})}
    if name not in found and not sweep:
        print(
            f"note: optimized_metric={name} was not reported by this run (only a sweep needs it)",
            file=sys.stderr,
        )
        return None
    if name not in found:
        raise ConfigError(
            f"optimized_metric={name} was not reported by this run; it reported: "
            f"{', '.join(sorted(k for k, v in found.items() if isinstance(v, float)))}. "
            "Set optimized_metric to one of these (fid_*/bpd_* need evaluation.metrics to include them)."
        )
    return float(found[name])


if __name__ == "__main__":
    main()
