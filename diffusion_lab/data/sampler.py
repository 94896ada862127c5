"""ResumableSampler: a training order that is a function of (seed, samples consumed) alone.

Epoch e visits the training set in the order randperm(n) drawn from a generator seeded with
(seed, e). A global batch of G = batch_size · world_size samples is split across ranks in
contiguous blocks (rank r takes positions [r·batch_size, (r+1)·batch_size) of each global batch),
and iteration starts where the run stands: `consumed()` samples into the stream, i.e.
global_step · G. A run resumed from a checkpoint therefore sees, from its first step on, exactly
the batches the uninterrupted run saw, mid-epoch included, on one process or under DDP; nothing
about the data position needs to be stored.

With drop_last the last n mod G samples of each epoch's order are left out (as a DataLoader with
drop_last would); without it the last global batch is short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        drop_last: bool = True,
        position: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 1),
    ):
        """`position()` returns (samples consumed by the whole run, rank, world size)."""
        self.n, self.batch_size, self.seed, self.drop_last = (
            num_samples,
            batch_size,
            seed,
            drop_last,
        )
        self.position = position

    def _usable(self, world_size: int) -> int:
        g = self.batch_size * world_size
        return (self.n // g) * g if self.drop_last else self.n

    def order(self, epoch: int) -> torch.Tensor:
        """The whole run's visiting order in `epoch` (before the split across ranks)."""
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(int(state)))

    def __iter__(self) -> Iterator[int]:
        consumed, rank, world_size = self.position()
        usable, g = self._usable(world_size), self.batch_size * world_size
        if usable == 0:
            return
        epoch, offset = divmod(consumed, usable)
        order = self.order(epoch)[:usable]
        for start in range(offset - offset % g, usable, g):
            block = order[start + rank * self.batch_size : start + (rank + 1) * self.batch_size]
            yield from block.tolist()

    def __len__(self) -> int:
        _, _, world_size = self.position()
        return self._usable(world_size) // world_size
