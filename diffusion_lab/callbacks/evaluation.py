"""Generative metrics and bits/dim during training, logged as `val/<key>` (e.g. val/fid_digits_2k).

Bits/dim are computed on the first nll.num_images validation images (train.py's final report
uses the test split).

Runs at the end of validation every `every_n_steps` training steps (null: never; train.py still
reports them at the end). Under DDP the ranks share the sample batches (sample i is seeded by
(seed, i), so the set is the one a single process draws); rank 0 scores the gathered samples and broadcasts the numbers so every rank logs the same values,
which lets `callbacks.model_checkpoint.monitor=val/fid_digits_2k` select the best checkpoint.
Between evaluations the latest values are logged again so the monitored key always exists.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.launch import Ranks
from diffusion_lab.metrics.names import QUALITY, check_metrics, is_quality_key
from diffusion_lab.metrics.report import generate_many, likelihood, quality


class EvaluationMetrics(pl.Callback):
    def __init__(self, evaluation: DictConfig | dict, cache_dir: str, every_n_steps: int | None):
        self.cfg = (
            OmegaConf.to_container(evaluation, resolve=True)
            if isinstance(evaluation, DictConfig)
            else dict(evaluation)
        )
        check_metrics(self.cfg["metrics"])
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError("callbacks.evaluation.every_n_steps must be >= 1 or null")
        self.every_n_steps, self.cache_dir = every_n_steps, Path(cache_dir)
        self.latest: dict[str, float] = {}

    def _samples(self, trainer, pl_module) -> torch.Tensor | None:
        """The evaluation samples on rank 0 (None on the others), drawn by all ranks together."""
        x, _ = generate_many(
            pl_module,
            self.cfg["num_samples"],
            int(self.cfg["seed"]),
            self.cfg["batch_size"],
            progress=False,
            ranks=Ranks(trainer.global_rank, trainer.world_size, pl_module.device),
        )
        return x

    def _compute(self, trainer, pl_module) -> dict[str, float]:
        values: dict[str, float] = {}
        datamodule = trainer.datamodule
        has_prior = pl_module.process.has_prior  # restoration-only processes: no quality metrics
        if has_prior and any(m in QUALITY for m in self.cfg["metrics"]):
            samples = self._samples(trainer, pl_module)  # every rank takes part in the gather
            if trainer.global_rank == 0:
                scores = quality(samples, datamodule, self.cfg, self.cache_dir)
                values.update({k: v for k, v in scores.items() if is_quality_key(k)})
                values = {k: v for k, v in values.items() if not k.endswith("_std")}
        if trainer.global_rank == 0 and "nll" in self.cfg["metrics"]:
            if pl_module.process.full_rank_noise and pl_module.process.linear:
                scores = likelihood(pl_module, datamodule, self.cfg, "nll", split="val")
                values.update({k: v for k, v in scores.items() if k.count("_") == 1})
        return trainer.strategy.broadcast(values, src=0)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.every_n_steps is None:
            return
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            was_training = pl_module.training
            with torch.no_grad():
                self.latest = self._compute(trainer, pl_module)
            pl_module.train(was_training)
        for key, value in self.latest.items():
            pl_module.log(f"val/{key}", float(value), sync_dist=False)
