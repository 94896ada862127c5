"""Measures training throughput (images/s over the training steps only) and peak memory.

Why not Lightning's `ThroughputMonitor`: it times from `on_train_start`, so validation, sample
grids and metric callbacks between steps count as training time, and it keeps no state across a
resume. results.json's `train_images_per_s` is the rate of the optimisation steps alone, summed
over every segment of a resumed run (this callback's state_dict travels in the checkpoint).
"""

import resource
import time

import pytorch_lightning as pl
import torch


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak accelerator memory if on CUDA, else the process's peak resident set size."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


class Throughput(pl.Callback):
    def __init__(self):
        self.images, self.seconds, self._start = 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seconds += time.perf_counter() - self._start
        self.images += batch[0].shape[0] * trainer.world_size
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            pl_module.log("train/images_per_s", self.images_per_s, on_step=True, on_epoch=False)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def state_dict(self):
        return {"images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state_dict):
        self.images, self.seconds = state_dict["images"], state_dict["seconds"]
