"""`python train_ae.py [group=option ...] [key=value ...]`: train the latent-diffusion autoencoder,
test it, save reconstructions.png and write results.json (docs/autoencoder.md)."""

import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.autoencoder.module import RECONSTRUCTION, AutoencoderModule
from diffusion_lab.autoencoder.reconstruction import reconstruct, reconstruction_metrics
from diffusion_lab.checkpoint import CheckpointError
from diffusion_lab.cli import CONFIG_DIR
from diffusion_lab.cli.common import (
    checked_resume_path,
    record_choices,
    terminate_on_sigterm,
    user_errors,
)
from diffusion_lab.cli.train import trained_steps
from diffusion_lab.metrics.report import _held_out_images
from diffusion_lab.results import versions, write_json
from diffusion_lab.values import ConfigError, check_values
from diffusion_lab.visualize import save_samples

KEYS = (
    ("seed", "seed"),
    ("dataset.batch_size", "count"),
    ("trainer.max_steps", "count"),
    ("num_samples", "samples"),
    ("loss.kl_weight", "guidance"),  # a number >= 0
    ("optim.lr", "positive"),
    ("optim.lr_warmup_steps", "count0"),
    ("optim.gradient_clip_val", "positive_or_null"),
    ("discriminator.start", "count0"),
    ("discriminator.weight", "guidance"),
    ("evaluation.num_images", "samples"),
    ("evaluation.batch_size", "count"),
)
# what the weights depend on: resuming with other values would load into another network
MODEL_KEYS = ("dataset.channels", "dataset.image_size", "autoencoder", "discriminator.enabled")


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, AutoencoderModule]:
    check_values(cfg, KEYS)
    if cfg.loss.reconstruction not in RECONSTRUCTION:
        raise ConfigError(
            f"loss.reconstruction={cfg.loss.reconstruction}: use one of {RECONSTRUCTION}"
        )
    datamodule = instantiate(cfg.dataset)
    try:
        autoencoder = instantiate(cfg.autoencoder)
        autoencoder.latent_shape(
            (cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size)
        )
    except (InstantiationException, ValueError) as err:
        raise ConfigError(f"autoencoder={cfg.choices.get('autoencoder', '?')}: {err}") from None
    disc = cfg.discriminator
    module = AutoencoderModule(
        autoencoder,
        reconstruction=cfg.loss.reconstruction,
        kl_weight=cfg.loss.kl_weight,
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        lr_warmup_steps=cfg.optim.lr_warmup_steps,
        gradient_clip_val=cfg.optim.gradient_clip_val,
        disc_enabled=disc.enabled,
        disc_channels=disc.channels,
        disc_num_layers=disc.num_layers,
        disc_start=disc.start,
        disc_weight=disc.weight,
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    return datamodule, module


def _is_autoencoder_checkpoint(saved: DictConfig, path) -> None:
    if "autoencoder" not in saved:
        raise CheckpointError(
            f"{path} is not an autoencoder checkpoint (python train_ae.py writes those)"
        )


def resume_from(cfg: DictConfig) -> str | None:
    """ckpt_path (or, with auto_resume, the run's own last.ckpt): an autoencoder checkpoint
    that agrees with this run on MODEL_KEYS."""
    return checked_resume_path(cfg, MODEL_KEYS, kind=_is_autoencoder_checkpoint)


def train_ae(cfg: DictConfig) -> dict:
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c and "_target_" in c]
    loggers = [instantiate(lg) for lg in cfg.logger.values() if lg is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from(cfg), weights_only=True)
    fit_seconds = time.perf_counter() - start
    out = Path(cfg.paths.output_dir)
    with terminate_on_sigterm(
        f"training finished and {out / 'checkpoints' / 'last.ckpt'} holds its final state, but "
        "results.json was not written: rerun the same command to test and evaluate it"
    ):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics.update(
            {k: float(v) for k, v in trainer.test(module, datamodule=datamodule)[0].items()}
        )
        model = module.autoencoder.eval()
        x, _ = _held_out_images(datamodule, cfg.num_samples)
        grid = save_samples(_pairs(x, reconstruct(model, x)[0]), out / "reconstructions.png")
        evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
        reconstruction = reconstruction_metrics(
            model, datamodule, evaluation, cfg.paths.cache_dir, floor=evaluation["real_floor"]
        )
        results = {
            "metrics": metrics,
            "reconstruction": reconstruction,
            "global_step": trained_steps(trainer, out / "checkpoints" / "last.ckpt"),
            "fit_seconds": fit_seconds,
            "device": str(module.device),
            "checkpoint": str(out / "checkpoints" / "last.ckpt"),
            "reconstructions": str(grid),
            "choices": dict(cfg.get("choices", {})),
            "versions": versions(),
        }
        write_json(out / "results.json", results)
    shown = {k: v for k, v in reconstruction.items() if isinstance(v, float)}
    print(f"\nrun directory: {out}\n  reconstructions: {grid}\n  results: {out / 'results.json'}")
    print("  " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    return results


def _pairs(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Originals and reconstructions as alternating rows of a square save_samples grid: w columns
    (w even, w²/2 ≤ len(x)), so row 2i holds originals and row 2i + 1 their reconstructions."""
    w = 2
    while (w + 2) ** 2 // 2 <= len(x):
        w += 2
    n = min(len(x), w * w // 2)
    if n < w:  # fewer images than one row: one row of originals over one of reconstructions
        return torch.cat([x[:n], x_hat[:n]])
    rows = [t for i in range(0, n, w) for t in (x[i : i + w], x_hat[i : i + w].clamp(-1, 1))]
    return torch.cat(rows)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train_ae")
def main(cfg: DictConfig) -> None:
    record_choices(cfg)
    with user_errors():
        train_ae(cfg)


if __name__ == "__main__":
    main()
