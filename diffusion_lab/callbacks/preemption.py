"""Preemption: on SIGTERM, write checkpoints/last.ckpt at the end of the current step and exit
cleanly; rerunning the same command in the same run directory resumes from it (train.py's
`auto_resume`).

Lightning turns SIGTERM into a `SIGTERMException` raised between steps (after the step's EMA
update and callbacks), on every rank; this callback saves the checkpoint at that point through
the trainer (rank 0 writes, atomically). Under SLURM, Lightning itself handles the requeue signal
(SIGUSR1: an hpc checkpoint and `scontrol requeue`), and restores from it on the next start.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException


class Preemption(pl.Callback):
    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self.saved_at: int | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)
        self.saved_at = trainer.global_step
        pl_module.print(
            f"\nSIGTERM: saved {self.path} at step {trainer.global_step}; run the same command "
            "with the same run directory (hydra.run.dir=...) to resume from it"
        )
