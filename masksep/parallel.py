"""Data-parallel training (DDP) as train.fit sees it: one explicit :class:`Dist`.

``fit`` never asks torch.distributed who it is; the caller says (a Ray Train
worker passes ``Dist.from_process_group()``, everything else the default
single-process ``Dist()``). Every DDP detail the loop needs lives here: the
wrapped model, the sharded sampler, the all-reduce of sums and the barrier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_process_group(cls) -> Dist:
        """The initialised default process group (Ray Train sets it up), else one process."""
        if torch_dist.is_available() and torch_dist.is_initialized():
            return cls(torch_dist.get_rank(), torch_dist.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files; the other ranks only compute."""
        return self.rank == 0

    def device(self, kind: str) -> torch.device:
        """Under DDP each rank uses the GPU Ray Train gave it (``current_device``)."""
        if kind == "cuda" and self.active:
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(kind)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.active:
            return model
        # find_unused_parameters: the TCN keeps the last block's residual conv
        # (for Asteroid's parameter count) but never uses it (models/tcn.py).
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)

    def train_loader(self, dataset: Dataset, batch_size: int, seed: int, epoch: int,
                     num_workers: int = 0) -> DataLoader:
        """A reshuffle per epoch, reproducible from (seed, epoch): a resumed run,
        and every head variant of one seed, sees the same batches."""
        if self.active:
            sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                         shuffle=True, seed=seed, drop_last=True)
            sampler.set_epoch(epoch)
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                              num_workers=num_workers, drop_last=True)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                          num_workers=num_workers, drop_last=True)

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's share of an evaluation set: every world_size-th item."""
        return indices[self.rank :: self.world_size] if self.active else indices

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.tolist()


SINGLE = Dist()
