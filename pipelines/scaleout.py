"""Distillation across processes with ``torchrun``: each rank distils a contiguous shard of
the classes and the rows are gathered into one set.

Every rank draws the same random numbers for all classes (network re-initialisation, real
batches, DSA parameters), and a class's loss depends only on its own images, so the gathered
set equals a single-process run with the same seed up to floating-point summation order (tested).

    torchrun --nproc_per_node 4 pipelines/run.py distill --named-set atom_ipc50 --out runs/atom50
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK); one process when unset."""
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def shard_of(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """Classes ``[lo, hi)`` of ``rank``: contiguous, sizes differing by at most one."""
    return rank * num_classes // world, (rank + 1) * num_classes // world


def start(d: Dist, device: torch.device) -> None:
    import torch.distributed as dist

    if d.active and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def gather_shards(images: Tensor, num_classes: int, ipc: int, d: Dist, device: torch.device) -> Tensor:
    """Every rank's optimised rows assembled into the full class-major set (on every rank)."""
    import torch.distributed as dist

    local = images.to(device).contiguous()
    parts = [torch.empty_like(local) for _ in range(d.world)]
    dist.all_gather(parts, local)
    out = local.clone()
    for r, part in enumerate(parts):
        lo, hi = shard_of(num_classes, r, d.world)
        out[lo * ipc : hi * ipc] = part[lo * ipc : hi * ipc]
    return out.cpu()


def stop(d: Dist) -> None:
    import torch.distributed as dist

    if d.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
