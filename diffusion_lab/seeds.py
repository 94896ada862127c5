"""Seeds per sample index: the same set of samples for any batch size and any number of devices.

`IndexGenerators(seed, indices)` holds one CPU generator per sample index i, seeded from (seed, i)
through numpy's SeedSequence (well-mixed 64-bit states: seed 0 / index 1 and seed 1 / index 0 are
unrelated streams, unlike `seed + i`). Sample i's prior draw and every noise draw a sampler makes
for it come from its own stream, so its value depends only on (seed, i, sampler): splitting the
indices into batches, or over ranks, or resuming an interrupted run after index k, reproduces the
same samples. This is what EDM's generate.py does with one seed per image; here the sampler's
stochastic steps (samplers/common.randn_like) draw from the same per-index streams.

Shapes: `randn((B, *shape))` stacks one (*shape) draw per index, B = len(indices).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def index_seed(seed: int, index: int) -> int:
    """The 64-bit seed of sample `index` under run seed `seed`."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


class IndexGenerators:
    """One torch.Generator (CPU) per sample index; a drop-in for the `generator` a sampler takes."""

    device = torch.device("cpu")

    def __init__(self, seed: int, indices: Iterable[int]):
        self.indices = [int(i) for i in indices]
        self.generators = [torch.Generator().manual_seed(index_seed(seed, i)) for i in self.indices]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape, dtype=torch.float32) -> Tensor:
        """(B, *shape[1:]) standard normal noise on the CPU, row b from index b's stream."""
        if shape[0] != len(self):
            raise ValueError(f"noise for {shape[0]} samples asked of {len(self)} index streams")
        return torch.stack(
            [torch.randn(shape[1:], generator=g, dtype=dtype) for g in self.generators]
        )

    def prior(self, process) -> Tensor:
        """x_T (B, *data_shape) on the CPU: one draw of `process.prior` per index, from its stream
        (a process's prior may share draws across a batch, e.g. a mixture's component choice, so
        each sample is drawn as a batch of one)."""
        return torch.cat([process.prior(1, device="cpu", generator=g) for g in self.generators])
