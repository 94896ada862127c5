"""LastCheckpoint: `checkpoints/last.ckpt` is always the final state of the run (DESIGN §4).

Lightning's ModelCheckpoint(save_last=True) refreshes last.ckpt only when it also saves a top-k
checkpoint, i.e. when validation runs and the monitored metric improves: a run whose val loss
stopped improving, or whose max_steps is off the validation grid, would end with an older
last.ckpt that resume, sample.py and evaluate.py then use silently. This callback writes it

- at the end of every fit that ends normally (`on_fit_end`: also a resume that finds max_steps
  already reached, so the run directory it writes always holds its final state), and
- on SIGTERM (pre-emption): Lightning turns the signal into a `SIGTERMException` raised between
  steps, after the step's EMA update; the checkpoint is written there and the process exits;
  rerunning the same command in the same run directory resumes from it (train.py's `auto_resume`).

Writes go through the trainer (rank 0 writes, atomically via AtomicCheckpointIO; every rank takes
part). A state with NaN/Inf weights is never written (DiffusionModule.on_save_checkpoint refuses).
Under SLURM, Lightning itself handles the requeue signal (SIGUSR1: an hpc checkpoint and
`scontrol requeue`), and restores from it on the next start.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self.saved_at: int | None = None

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: resumable
        self.saved_at = trainer.global_step

    def on_fit_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        self._save(trainer)
        pl_module.print(
            f"\nSIGTERM: saved {self.path} at step {trainer.global_step}; run the same command "
            "with the same run directory (hydra.run.dir=...) to resume from it"
        )
