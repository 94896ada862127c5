"""Saves a grid of EMA samples from a fixed seed every N training steps and at the end.

Each grid also goes to the loggers that take images (W&B, TensorBoard) as `samples`. Processes
without a prior (restoration-only, e.g. snow) restore the first validation images, degraded to t = 1.
"""

from pathlib import Path

import pytorch_lightning as pl

from diffusion_lab.loggers import log_image
from diffusion_lab.sampling import generate_ema
from diffusion_lab.visualize import save_samples


class SampleGrid(pl.Callback):
    def __init__(
        self, dirpath: str, every_n_steps: int = 1000, num_samples: int = 64, seed: int = 0
    ):
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError("callbacks.sample_grid: every_n_steps and num_samples must be >= 1")
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps
        self.num_samples, self.seed = num_samples, seed

    def _save(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        x, _ = generate_ema(
            pl_module, self.num_samples, seed=self.seed, datamodule=trainer.datamodule
        )
        path = save_samples(x, self.dirpath / f"step_{trainer.global_step:07d}.png")
        log_image(trainer.loggers, "samples", path, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            self._save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step % self.every_n_steps != 0:
            self._save(trainer, pl_module)
