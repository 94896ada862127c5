"""DistillModule: a DiffusionModule whose training loss is a distillation loss against a teacher.

Everything else is DiffusionModule's: AdamW with warm-up on the student, the student's own EMA copy
(what round checkpoints, sample.py and evaluate.py use), step-indexed seeding (exact resume), the
validation loss (the teacher run's objective on the student), NaN guards. What it adds:

- `teacher`: the frozen teacher denoiser (requires_grad off, always in eval mode). It is NOT saved
  in the checkpoint: it is rebuilt from its own file (distill_round.teacher_ckpt) on resume.
- `target_net` (consistency only): θ⁻, updated θ⁻ ← μ θ⁻ + (1 − μ) θ after each step; saved under
  the checkpoint key `distill_target`, outside the state_dict, so a round checkpoint holds exactly
  the keys of a training checkpoint and sample.py / evaluate.py rebuild it with the usual builder.
- `distill_round` in the checkpoint: the round index, checked when a round resumes.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from diffusion_lab.ema import ema_update
from diffusion_lab.module import DiffusionModule

TEACHER, TARGET = "teacher.", "target_net."
TARGET_KEY, ROUND_KEY = "distill_target", "distill_round"


class DistillModule(DiffusionModule):
    def __init__(self, *, method, teacher: nn.Module, round_index: int, num_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.method, self.round_index, self.num_steps = method, int(round_index), int(num_steps)
        self.teacher = teacher.requires_grad_(False).eval()
        self.target_net = None
        if method.has_target_net:  # consistency: θ⁻ starts as θ
            self.target_net = copy.deepcopy(self.denoiser).requires_grad_(False).eval()

    def train(self, mode: bool = True):
        """Teacher and target network stay in eval mode (no dropout), like the EMA copy."""
        super().train(mode)
        self.teacher.eval()
        if self.target_net is not None:
            self.target_net.eval()
        return self

    def training_loss(self, x0: Tensor, cond: Tensor | None) -> Tensor:
        if self.target_net is None:
            return self.method.loss(
                self.denoiser, self.teacher, self.process, x0, cond, self.num_steps
            )
        return self.method.loss(
            self.denoiser, self.target_net, self.teacher, self.process, x0, cond
        )

    def on_train_batch_end(self, outputs, batch, batch_idx):
        super().on_train_batch_end(outputs, batch, batch_idx)  # the student's EMA
        if self.target_net is not None:
            ema_update(self.target_net, self.denoiser, self.method.mu)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER)]:
            del state[key]
        target = {k[len(TARGET) :]: state.pop(k) for k in list(state) if k.startswith(TARGET)}
        if target:
            checkpoint[TARGET_KEY] = target
        checkpoint[ROUND_KEY] = self.round_index
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Lightning resume: put back the teacher (from its own file) and θ⁻ before loading."""
        state = checkpoint["state_dict"]
        state.update({TEACHER + k: v for k, v in self.teacher.state_dict().items()})
        if self.target_net is not None:
            saved = checkpoint.get(TARGET_KEY) or self.denoiser.state_dict()
            state.update({TARGET + k: v for k, v in saved.items()})
