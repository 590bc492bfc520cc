"""Devices, process ranks under ``torchrun`` and each rank's share of the data.

The loop never starts a process group: the caller (e.g. the ``fuse`` stage) joins
the one ``torchrun`` sets up, and the loop reads rank and world size from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def resolve_device(device: str | None) -> torch.device:
    """``device`` when given, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sums(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over all ranks (float64; keys in sorted order on every rank); unchanged on one process."""
    values = dict(values)
    if rank_and_world()[1] == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=False))


@dataclass(frozen=True)
class Shard:
    """This process's place among the training processes, given to a task to pick its share of the data.

    Attributes:
        rank: this process's rank (0 without ``torchrun``).
        world: number of processes (1 without ``torchrun``).
        seed: the run's seed, for shuffles that must agree across ranks and across a resume.
    """

    rank: int = 0
    world: int = 1
    seed: int = 0

    def indices(self, n: int, epoch: int, shuffle: bool = True) -> np.ndarray:
        """This rank's items of ``range(n)`` for ``epoch`` (a :class:`~torch.utils.data.DistributedSampler` order).

        The order depends only on ``seed``, ``epoch``, rank and world size (not on the
        global RNGs), so every rank agrees and a resumed run sees the same order. The
        sampler pads with repeats so that every rank gets the same number of items.
        """
        sampler = torch.utils.data.DistributedSampler(
            range(n), num_replicas=self.world, rank=self.rank, shuffle=shuffle, seed=self.seed)
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
