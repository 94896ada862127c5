"""Running sampling on every local device (and node) with Lightning Fabric: sample.py, evaluate.py.

    result = on_devices(work, *args, device=..., devices=..., num_nodes=..., strategy=...)

calls `work(ranks, *args)` once per process, where `ranks` (a `Ranks`) says which process this is
and gives its device, `barrier()` and `gather()` (to rank 0). One device on one node runs `work` here with no
process group; otherwise Fabric starts the processes the way train.py's Trainer does: `ddp`
re-runs the script for ranks > 0 (pinned to this job's run directory), `ddp_spawn` spawns them,
and under torchrun or SLURM the launcher's processes join. Returns rank 0's result on rank 0 and
None on the others (which then have nothing left to do).

Work is split by sample blocks, `ranks.share(blocks)` = blocks[rank::world]; with per-index
seeds (diffusion_lab/seeds.py) the set of samples is the same for any number of processes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    """Which process this is (of `world`, in an initialised torch.distributed group when world > 1:
    Fabric's here, or a Lightning Trainer's in the evaluation callback) and its device."""

    rank: int
    world: int
    device: torch.device

    def share(self, items: list) -> list:
        """This rank's items: every world-th, starting at its rank."""
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj) -> list | None:
        """Every rank's `obj` (picklable: tensors on the CPU) on rank 0, in rank order; None on
        the others."""
        if self.world == 1:
            return [obj]
        objs = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, objs, dst=0)
        return objs


def on_devices(work, *args, device: str = "auto", devices=1, num_nodes: int = 1, strategy="auto"):
    """`work(ranks, *args)` on devices × num_nodes processes; rank 0's result (None elsewhere).
    `device`: auto (a GPU when there is one), cpu, cuda or cuda:k (one process only)."""
    if devices in (1, "1") and num_nodes == 1:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return work(Ranks(0, 1, torch.device(device)), *args)
    accelerator = "cpu" if device == "cpu" else "cuda" if device.startswith("cuda") else "auto"
    from lightning_fabric import Fabric

    from diffusion_lab.cli.common import one_ddp_job, pin_job_for_ddp_workers

    pin_job_for_ddp_workers()  # `ddp` re-runs this job, in this job's directory, for ranks > 0
    with one_ddp_job():
        fabric = Fabric(
            accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy
        )
        result = fabric.launch(_on_rank, work, *args)
        if fabric.global_rank != 0:
            return None
        return torch.load(io.BytesIO(result), weights_only=True)


def _on_rank(fabric, work, *args) -> bytes:
    """Run `work` on this rank; its result serialised, because `ddp_spawn` hands rank 0's result
    to the parent through a queue, where tensors would travel as shared-memory handles that die
    with the child (tensors, lists, tuples, dicts and numbers: what torch.load(weights_only) takes)."""
    result = work(Ranks(fabric.global_rank, fabric.world_size, fabric.device), *args)
    buffer = io.BytesIO()
    torch.save(result, buffer)
    return buffer.getvalue()
