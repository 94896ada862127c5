"""Checks the two DDP invariants of diffusion training, across ranks, every N steps and at the end.

1. Replicas agree: the weights and the EMA weights are bitwise identical on every rank (DDP
   all-reduces gradients; the EMA update is a deterministic function of the weights).
2. Noise does not: each rank draws its own t and noise (seed + global_rank, DESIGN §4), otherwise
   the ranks would train on correlated noise and the effective batch would shrink.

Each rank contributes a fingerprint: float64 sums of its parameters and of its EMA (plain and
position-weighted, so a permutation also shows), and a peek at the next numbers its random stream
will produce (drawn under torch.random.fork_rng, so training's stream is untouched). Rank 0 writes
the gathered fingerprints to `ddp_check.json`; diverged replicas raise an error naming the step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn


def fingerprint(module: nn.Module) -> Tensor:
    """(2,) float64: Σ p and Σ w_k p_k over all parameters, w_k = 1 + k / numel."""
    plain = torch.zeros((), dtype=torch.float64)
    weighted = torch.zeros((), dtype=torch.float64)
    for p in module.parameters():
        flat = p.detach().double().flatten().cpu()
        w = 1 + torch.arange(flat.numel(), dtype=torch.float64) / flat.numel()
        plain += flat.sum()
        weighted += (w * flat).sum()
    return torch.stack([plain, weighted])


def noise_peek(device: torch.device, n: int = 4) -> Tensor:
    """The next n standard normals of this rank's stream on `device`, without consuming them."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return torch.randn(n, device=device).double().cpu()


def _same(rows: Tensor) -> bool:
    """Every rank's fingerprint equals rank 0's, bitwise (NaN equals NaN: that is not divergence)."""
    return bool(torch.isclose(rows, rows[0], rtol=0, atol=0, equal_nan=True).all())


class DDPConsistency(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 0):
        self.path = Path(dirpath) / "ddp_check.json"
        self.every_n_steps = every_n_steps
        self.records: list[dict] = []

    def _check(self, trainer: pl.Trainer, pl_module) -> None:
        local = torch.cat(
            [
                fingerprint(pl_module.denoiser),
                fingerprint(pl_module.ema),
                noise_peek(pl_module.device),
            ]
        )
        gathered = trainer.strategy.all_gather(local.to(pl_module.device)).cpu()
        gathered = gathered.reshape(trainer.world_size, -1)
        weights, ema, noise = gathered[:, :2], gathered[:, 2:4], gathered[:, 4:]
        record = {
            "step": trainer.global_step,
            "world_size": trainer.world_size,
            "weights": weights.tolist(),
            "ema": ema.tolist(),
            "noise": noise.tolist(),
            "weights_equal": _same(weights),
            "ema_equal": _same(ema),
            "noise_distinct": len({tuple(r) for r in noise.tolist()}) == trainer.world_size,
        }
        self.records.append(record)
        if trainer.global_rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.records, indent=1))
        if not torch.isfinite(torch.cat([weights, ema])).all():
            raise FloatingPointError(
                f"the weights or EMA weights are NaN/Inf at step {trainer.global_step} "
                f"(see {self.path}): training diverged; lower optim.optimizer.lr"
            )
        if not (record["weights_equal"] and record["ema_equal"]):
            raise RuntimeError(
                f"DDP replicas diverged at step {trainer.global_step} (see {self.path}): "
                "something updates weights or EMA outside the all-reduced gradient step "
                "(a rank-dependent operation, or a buffer changed on one rank)"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._check(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if not self.records or self.records[-1]["step"] != trainer.global_step:
            self._check(trainer, pl_module)
