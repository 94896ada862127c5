"""DiffusionModule: the LightningModule that trains a denoiser under a forward process.

It holds the parts build.py wired (process, denoiser, objective, sampler) and adds the training
loop concerns (sampling is diffusion_lab/sampling.py's, with the EMA copy held here): AdamW with linear warm-up, the EMA copy of the denoiser (used for all sampling and
saved in every checkpoint), a validation loss on a fixed t grid with seeded noise (comparable
across epochs), and step-indexed seeding of t and noise (exact resume, distinct per rank).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from diffusion_lab.checkpoint import CONFIG_KEY, nonfinite_tensors
from diffusion_lab.ema import ema_beta, ema_update
from diffusion_lab.guidance import drop_labels

# The EMA copy is in eval mode on purpose; Lightning would warn about it at every fit.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
# Mid-epoch resume is exact here: the training sampler starts from global_step (data/sampler.py).
warnings.filterwarnings("ignore", message=r".*ended before the epoch ended.*")


def step_seed(seed: int, rank: int, step: int, micro_batch: int = 0, stream: int = 0) -> int:
    """The seed of one training step's t, noise and dropout: a function of (seed, rank, optimizer
    step, micro-batch within a gradient accumulation) alone, so every rank draws its own noise
    (DESIGN §4) and a resumed run draws exactly what the uninterrupted run would have (no RNG
    state to save or lose). `stream` > 0 gives independent seeds for the same step (stream 1:
    the label-dropout mask; 2: a super-resolution stage's augmentation), leaving stream 0, the
    global RNG's, as it always was."""
    entropy = [seed, rank, step, micro_batch] + ([stream] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class DiffusionModule(pl.LightningModule):
    def __init__(
        self,
        process: nn.Module,
        denoiser: nn.Module,
        objective: nn.Module,
        sampler,
        optimizer,
        lr_warmup_steps: int = 0,
        ema_half_life_images: float = 50_000,
        ema_rampup_ratio: float | None = 0.05,
        val_num_t: int = 8,
        seed: int = 0,
        class_conditional: bool = False,
        num_classes: int | None = None,
        label_dropout: float = 0.0,
        config: dict | None = None,
        codec: nn.Module | None = None,
        lowres: nn.Module | None = None,
    ):
        super().__init__()
        self.process, self.denoiser, self.objective = process, denoiser, objective
        self.ema = copy.deepcopy(denoiser).requires_grad_(False).eval()
        self.sampler, self.optimizer_factory = sampler, optimizer
        self.lr_warmup_steps, self.val_num_t, self.seed = lr_warmup_steps, val_num_t, seed
        self.ema_half_life_images, self.ema_rampup_ratio = ema_half_life_images, ema_rampup_ratio
        self.class_conditional = class_conditional
        # the null label (backbone.num_classes) replaces each training label w.p. label_dropout
        self.num_classes, self.label_dropout = num_classes, float(label_dropout)
        self.config = config or {}
        # latent diffusion: the frozen autoencoder (latent/codec.py); samples leave decoded
        self.codec = codec
        # a cascade's super-resolution stage: cond = the low-resolution x0 (cascade/lowres.py)
        self.lowres = lowres

    def train(self, mode: bool = True):
        """The EMA copy always stays in eval mode (no dropout when sampling mid-training)."""
        super().train(mode)
        self.ema.eval()
        return self

    def decode(self, x: Tensor) -> Tensor:
        """Samples as images: a latent model's latents decoded, anything else unchanged."""
        return x if self.codec is None else self.codec.decode(x)

    # -- training ----------------------------------------------------------------------------
    def _cond(self, y: Tensor) -> Tensor | None:
        return y if self.class_conditional else None

    def on_fit_start(self):
        for logger in self.loggers:  # the full resolved config (W&B run config, hparams.yaml)
            logger.log_hyperparams(self.config)

    def training_step(self, batch, batch_idx):
        micro = batch_idx % self.trainer.accumulate_grad_batches  # position in an accumulation
        torch.manual_seed(step_seed(self.seed, self.global_rank, self.global_step, micro))
        x0, y = batch
        cond = self._cond(y)
        if cond is not None and self.label_dropout > 0:  # classifier-free guidance training
            # own stream of the step's seed: resumes exactly, leaves the t/noise draws unchanged
            seed = step_seed(self.seed, self.global_rank, self.global_step, micro, stream=1)
            gen = torch.Generator().manual_seed(seed)
            cond = drop_labels(cond, self.label_dropout, self.num_classes, gen)
        if self.lowres is not None:  # augmentation level and noise: stream 2 of the step's seed
            seed = step_seed(self.seed, self.global_rank, self.global_step, micro, stream=2)
            cond = self.lowres.training_condition(x0, torch.Generator().manual_seed(seed))
        # NaN/Inf losses are skipped by callbacks.nonfinite_guard (NonFiniteGuard)
        loss = self.training_loss(x0, cond).mean()
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0]
        )
        return loss

    def training_loss(self, x0: Tensor, cond: Tensor | None) -> Tensor:
        """Per-sample loss (B,) of one training step, drawn from the step's seeded RNG (a
        subclass such as distill.module.DistillModule trains against a teacher instead)."""
        return self.objective(self.denoiser, self.process, x0, cond)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        batch_size = batch[0].shape[0] * self.trainer.world_size
        images_seen = self.global_step * batch_size  # global_step already counts this step
        beta = ema_beta(batch_size, images_seen, self.ema_half_life_images, self.ema_rampup_ratio)
        ema_update(self.ema, self.denoiser, beta)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.denoiser.parameters())
        warmup = max(int(self.lr_warmup_steps), 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- validation: objective on a fixed t grid, seeded noise, EMA weights ---------------------
    def _fixed_grid_loss(self, batch, batch_idx: int, denoiser: nn.Module) -> Tensor:
        x0, y = batch
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + batch_idx)
        cond = self._cond(y)
        if self.lowres is not None:  # a super-resolution stage, at its sampling level
            cond = self.lowres.sampling_condition(self.lowres.downsample(x0), gen)
        losses = []
        for t in (torch.arange(self.val_num_t) + 0.5) / self.val_num_t:
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            t_batch = torch.full((x0.shape[0],), float(t), device=x0.device)
            losses.append(self.objective(denoiser, self.process, x0, cond, t=t_batch, noise=noise))
        return torch.stack(losses).mean()

    def validation_step(self, batch, batch_idx):
        for name, net in (("val/loss", self.denoiser), ("val/loss_ema", self.ema)):
            loss = self._fixed_grid_loss(batch, batch_idx, net)
            self.log(
                name,
                loss,
                prog_bar=name == "val/loss_ema",
                batch_size=batch[0].shape[0],
                sync_dist=True,
            )

    def test_step(self, batch, batch_idx):
        self.log(
            "test/loss_ema",
            self._fixed_grid_loss(batch, batch_idx, self.ema),
            batch_size=batch[0].shape[0],
            sync_dist=True,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint["state_dict"])
        if bad:  # never leave a NaN model where last.ckpt or a resume would pick it up
            raise FloatingPointError(
                f"refusing to write a checkpoint at step {self.global_step}: {len(bad)} tensors "
                f"hold NaN/Inf (e.g. {bad[0]}). The run diverged; resume from an earlier checkpoint "
                "with a lower optim.optimizer.lr."
            )
        checkpoint[CONFIG_KEY] = self.config  # fitted state is in the state_dict's buffers
