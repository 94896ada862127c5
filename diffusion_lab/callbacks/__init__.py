"""Lightning callbacks: sample grids during training and training throughput."""

from diffusion_lab.callbacks.sample_grid import SampleGrid
from diffusion_lab.callbacks.throughput import Throughput

__all__ = ["SampleGrid", "Throughput"]
