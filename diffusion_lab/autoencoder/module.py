"""AutoencoderModule: trains the LDM first stage (Rombach et al. 2022, §3 and App. G).

Per image, with D = C·H·W pixels and x̂ = decode(z), z ~ q(z|x):

    L = (1/D) Σ_pixels ρ(x − x̂) + kl_weight · KL(q(z|x) ‖ N(0, I)) / D  [+ λ_adv · L_G]

ρ is |·| (L1, LDM's choice) or (·)² (L2). Dividing both sums by D keeps `kl_weight` on LDM's
scale (their reconstruction term is summed over pixels, KL weight 1e-6) while the logged loss
reads as a per-pixel error. No perceptual (LPIPS) term: its VGG weights cannot be downloaded here.

With `disc_enabled`, from step `disc_start` on the decoder also minimises the hinge generator loss
L_G = −E[D(x̂)] of a PatchGAN (autoencoder/discriminator.py) with LDM's adaptive weight
λ_adv = disc_weight · ‖∇_w L_rec‖ / (‖∇_w L_G‖ + 1e-4), clamped to [0, 1e4], w = the decoder's last
layer (Esser et al. 2021, eq. 7), and the discriminator is trained with the hinge loss. Optimisation
is manual (two optimizers). The discriminator's optimizer steps outside Lightning's step counter,
so `global_step` counts batches (max_steps, val_check_interval and disc_start mean the same with
the discriminator on or off).

Randomness (the posterior sample, dropout) is seeded by `step_seed(seed, rank, global_step)`, so a
resumed run draws what the uninterrupted run would have. Validation reconstructs from the
posterior mean (deterministic) and logs val/rec_loss, val/kl (per image, summed over latent dims)
and val/psnr (dB, images mapped to [0, 1], averaged per image).

Shapes: batches (x (B, C, H, W) in [-1, 1], labels (B,)); labels are ignored.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from diffusion_lab.autoencoder.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from diffusion_lab.autoencoder.kl import KLAutoencoder
from diffusion_lab.checkpoint import CONFIG_KEY, nonfinite_tensors
from diffusion_lab.module import step_seed

RECONSTRUCTION = ("l1", "l2")


def reconstruction_error(x: Tensor, x_hat: Tensor, kind: str) -> Tensor:
    """(B,) mean over pixels of |x − x̂| (l1) or (x − x̂)² (l2)."""
    diff = x_hat - x
    err = diff.abs() if kind == "l1" else diff.pow(2)
    return err.flatten(1).mean(dim=1)


def psnr(x: Tensor, x_hat: Tensor) -> Tensor:
    """(B,) PSNR in dB of images in [-1, 1], mapped to [0, 1] (x̂ clamped to the data range)."""
    a, b = (x + 1) / 2, (x_hat.clamp(-1, 1) + 1) / 2
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """‖∇_w rec_loss‖ / (‖∇_w g_loss‖ + 1e-4), clamped to [0, 1e4], detached (Esser et al. 2021)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class AutoencoderModule(pl.LightningModule):
    def __init__(
        self,
        autoencoder: KLAutoencoder,
        reconstruction: str = "l1",
        kl_weight: float = 1e-6,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.9),
        lr_warmup_steps: int = 0,
        gradient_clip_val: float | None = 1.0,
        disc_enabled: bool = False,
        disc_channels: int = 32,
        disc_num_layers: int = 2,
        disc_start: int = 0,
        disc_weight: float = 0.5,
        seed: int = 0,
        config: dict | None = None,
    ):
        super().__init__()
        if reconstruction not in RECONSTRUCTION:
            raise ValueError(
                f"loss.reconstruction={reconstruction!r}; choose from {RECONSTRUCTION}"
            )
        self.automatic_optimization = False
        self.autoencoder = autoencoder
        self.discriminator: nn.Module | None = (
            PatchDiscriminator(autoencoder.in_channels, disc_channels, disc_num_layers)
            if disc_enabled
            else None
        )
        self.reconstruction, self.kl_weight = reconstruction, float(kl_weight)
        self.lr, self.betas, self.lr_warmup_steps = float(lr), tuple(betas), int(lr_warmup_steps)
        self.gradient_clip_val = gradient_clip_val
        self.disc_start, self.disc_weight = int(disc_start), float(disc_weight)
        self.seed = seed
        self.config = config or {}

    def on_fit_start(self):
        for logger in self.loggers:
            logger.log_hyperparams(self.config)

    # -- training ----------------------------------------------------------------------------
    def _optimizers(self) -> list:
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    def _step_optimizer(self, opt, loss: Tensor) -> None:
        """Backward, clip, set the warm-up learning rate (the caller steps)."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.clip_gradients(opt, self.gradient_clip_val, "norm")
        for group in opt.optimizer.param_groups:  # linear warm-up from 0 to lr
            group["lr"] = self.lr * min(1.0, (self.global_step + 1) / (self.lr_warmup_steps + 1))

    def training_step(self, batch, batch_idx):
        seed = step_seed(self.seed, self.global_rank, self.global_step)
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)
        x = batch[0]
        d = x[0].numel()
        x_hat, posterior = self.autoencoder(x, generator)
        rec = reconstruction_error(x, x_hat, self.reconstruction).mean()
        kl = posterior.kl().mean()
        loss = rec + self.kl_weight * kl / d
        adversarial = self.discriminator is not None and self.global_step >= self.disc_start
        logs = {"train/rec_loss": rec, "train/kl": kl}
        if adversarial:
            self.discriminator.requires_grad_(False)
            g_loss = hinge_g_loss(self.discriminator(x_hat))
            weight = self.disc_weight * adaptive_weight(rec, g_loss, self.autoencoder.last_layer)
            loss = loss + weight * g_loss
            self.discriminator.requires_grad_(True)
            logs.update({"train/g_loss": g_loss, "train/disc_weight": weight})
        opts = self._optimizers()
        self._step_optimizer(opts[0], loss)
        opts[0].step()  # counted by Lightning: global_step += 1 per batch
        if adversarial:
            d_loss = hinge_d_loss(self.discriminator(x), self.discriminator(x_hat.detach()))
            self._step_optimizer(opts[1], d_loss)
            opts[1].optimizer.step()  # the raw optimizer: not counted in global_step
            logs["train/d_loss"] = d_loss
        logs["train/loss"] = loss
        logged = {k: v.detach() for k, v in logs.items()}
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log(
            "rec", logged["train/rec_loss"], prog_bar=True, logger=False, batch_size=x.shape[0]
        )

    def configure_optimizers(self):
        opts = [torch.optim.Adam(self.autoencoder.parameters(), lr=self.lr, betas=self.betas)]
        if self.discriminator is not None:
            opts.append(
                torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)
            )
        return opts

    # -- validation / test: reconstruct from the posterior mean ----------------------------------
    def _evaluate(self, batch, prefix: str) -> None:
        x = batch[0]
        posterior = self.autoencoder.encode(x)
        x_hat = self.autoencoder.decode(posterior.mode())
        values = {
            f"{prefix}/rec_loss": reconstruction_error(x, x_hat, self.reconstruction).mean(),
            f"{prefix}/kl": posterior.kl().mean(),
            f"{prefix}/psnr": psnr(x, x_hat).mean(),
        }
        self.log_dict(values, prog_bar=prefix == "val", batch_size=x.shape[0], sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint["state_dict"])
        if bad:  # never leave a NaN model where last.ckpt, a resume or latent= would pick it up
            raise FloatingPointError(
                f"refusing to write a checkpoint at step {self.global_step}: {len(bad)} tensors "
                f"hold NaN/Inf (e.g. {bad[0]}). The run diverged; resume from an earlier checkpoint "
                "with a lower optim.lr."
            )
        checkpoint[CONFIG_KEY] = self.config
