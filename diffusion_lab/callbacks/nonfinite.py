"""NonFiniteGuard: a step whose loss or gradients are NaN/Inf is skipped, counted, and K of them
in a row stop training with an error that names the last good checkpoint. Weights
that became NaN/Inf through a finite but absurd update (e.g. optim.optimizer.lr=inf) stop training
at once, before any validation or checkpoint of that step, so no non-finite state is ever saved;
the checkpoint the error names as good is read back and checked to be finite.

The check runs on the gradients just before the optimizer step (a non-finite loss gives
non-finite gradients). Under DDP the gradients are already all-reduced, so every rank takes the
same decision. A skipped step leaves the weights untouched (all gradients are dropped, so the
optimizer updates nothing) but still counts as a step, so the step-indexed data order and noise
of a resumed run stay aligned. With a GradScaler (precision=16-mixed) overflowing steps are the
scaler's business and this guard stands aside.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from diffusion_lab.checkpoint import nonfinite_tensors


class NonFiniteGuard(pl.Callback):
    def __init__(self, max_consecutive: int = 10):
        if max_consecutive < 1:
            raise ValueError(
                f"callbacks.nonfinite_guard.max_consecutive={max_consecutive} must be >= 1"
            )
        self.max_consecutive = max_consecutive
        self.skipped = 0  # in the whole run
        self.in_a_row = 0

    @staticmethod
    def _finite(params) -> bool:
        norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        return not norms or math.isfinite(torch.stack(norms).sum().item())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self._finite(params):
            self.in_a_row = 0
        else:
            for p in params:
                p.grad = None
            self.skipped += 1
            self.in_a_row += 1
            pl_module.print(
                f"step {trainer.global_step}: non-finite loss or gradients, step skipped "
                f"({self.in_a_row} in a row, {self.skipped} in all)"
            )
            if self.in_a_row >= self.max_consecutive:
                raise FloatingPointError(self._message(trainer))
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # The weights only: the EMA (updated after this hook) is a convex combination of weights
        # checked here, so it can turn non-finite only a step after they did, and they stop it.
        bad = nonfinite_tensors(dict(pl_module.denoiser.named_parameters()))
        if bad:
            raise FloatingPointError(
                f"training stopped at step {trainer.global_step}: the weights became NaN/Inf "
                f"({len(bad)} tensors, e.g. {bad[0]}) after a step with finite gradients, so "
                f"the update itself diverged. {self._where(trainer)} a lower "
                "optim.optimizer.lr (a finite value such as 1e-3) or trainer.gradient_clip_val."
            )

    @staticmethod
    def _last_good(trainer) -> str | None:
        """The newest checkpoint of this run whose weights are all finite (read back to check)."""
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        for path in (ckpt.last_model_path, ckpt.best_model_path) if ckpt else ():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # missing or unreadable: not a good checkpoint
                continue
            if not nonfinite_tensors(state.get("state_dict", {})):
                return path
        return None

    def _where(self, trainer) -> str:
        good = self._last_good(trainer)
        if good:
            return f"The last good checkpoint is {good}: resume from it with ckpt_path={good} and"
        return "No finite checkpoint was written before this: restart with"

    def _message(self, trainer) -> str:
        return (
            f"training stopped at step {trainer.global_step}: {self.in_a_row} consecutive steps had "
            f"NaN/Inf loss or gradients ({self.skipped} skipped in all). {self._where(trainer)} a "
            "lower optim.optimizer.lr, trainer.gradient_clip_val set, or trainer.precision=32-true "
            "(callbacks.nonfinite_guard.max_consecutive sets how many bad steps are tolerated)."
        )

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped, self.in_a_row = state_dict["skipped"], state_dict["in_a_row"]
