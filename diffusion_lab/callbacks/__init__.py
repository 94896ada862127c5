"""Lightning callbacks: sample grids, generative metrics during training, training throughput,
DDP replica checks, the NaN/Inf guard and the final/pre-emption last.ckpt."""

from diffusion_lab.callbacks.ddp_check import DDPConsistency
from diffusion_lab.callbacks.evaluation import EvaluationMetrics
from diffusion_lab.callbacks.last_checkpoint import LastCheckpoint
from diffusion_lab.callbacks.nonfinite import NonFiniteGuard
from diffusion_lab.callbacks.sample_grid import SampleGrid
from diffusion_lab.callbacks.throughput import Throughput

__all__ = [
    "DDPConsistency",
    "EvaluationMetrics",
    "LastCheckpoint",
    "NonFiniteGuard",
    "SampleGrid",
    "Throughput",
]
