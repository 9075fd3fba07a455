"""An endless, exactly resumable stream of training batches, split disjointly between ranks.

Every epoch draws a fresh permutation of the samples from ``(seed, epoch)``; rank ``r`` of
``world_size`` takes every ``world_size``-th sample of it (the remainder is dropped, so every
rank's epoch has the same length). The augmentation of the sample at position ``p`` of a rank's
stream is seeded by ``(seed, rank, p)``. A batch is therefore a pure function of
``(dataset, seed, iteration, rank, world_size)``: resuming at ``start_iteration=k`` yields
exactly the batches an uninterrupted run would have seen from iteration ``k`` on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from casprof.errors import UserInputError
from search.data.base import SegmentationDataset

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class BatchPlan:
    """Which samples a rank reads: batch size, seed and the rank's place among ``world_size``."""

    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def check(self, num_samples: int) -> None:
        if self.batch_size < 1:
            raise UserInputError(f"The batch size must be at least 1, not {self.batch_size}.")
        if self.seed < 0:
            raise UserInputError(f"The seed must be a non-negative integer, not {self.seed}.")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UserInputError(f"Rank {self.rank} is not valid for a world size of {self.world_size}.")
        if num_samples < self.world_size:
            raise UserInputError(
                f"The dataset has {num_samples} samples, fewer than the {self.world_size} ranks that share it."
            )

    def indices(self, num_samples: int, iteration: int) -> list[tuple[int, int]]:
        """The ``(sample index, stream position)`` pairs of this rank's batch at ``iteration``."""
        per_rank = num_samples // self.world_size
        shares: dict[int, np.ndarray] = {}
        pairs = []
        for position in range(iteration * self.batch_size, (iteration + 1) * self.batch_size):
            epoch = position // per_rank
            if epoch not in shares:
                order = np.random.default_rng([self.seed, epoch]).permutation(num_samples)
                shares[epoch] = order[self.rank :: self.world_size][:per_rank]
            pairs.append((int(shares[epoch][position % per_rank]), position))
        return pairs


def batch_indices(
    num_samples: int, *, batch_size: int, seed: int, iteration: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """The ``(sample index, stream position)`` pairs of rank ``rank``'s batch at ``iteration``."""
    plan = BatchPlan(batch_size, seed, rank, world_size)
    plan.check(num_samples)
    return plan.indices(num_samples, iteration)


class _BatchesByIteration(Dataset):
    """Item ``k`` is the whole batch of iteration ``k`` (lets a DataLoader build batches in workers)."""

    def __init__(self, dataset: SegmentationDataset, plan: BatchPlan) -> None:
        self.dataset, self.plan = dataset, plan

    def __getitem__(self, iteration: int) -> Batch:
        plan = self.plan
        pairs = plan.indices(len(self.dataset), iteration)
        samples = [self.dataset.sample(i, np.random.default_rng([plan.seed, plan.rank, p])) for i, p in pairs]
        images, labels = zip(*samples)
        try:
            return torch.stack(images), torch.stack(labels)
        except RuntimeError:
            message = "The samples of a batch have different sizes; give the dataset a resize or a crop."
            raise UserInputError(message) from None


def batches(
    dataset: SegmentationDataset,
    *,
    batch_size: int,
    seed: int,
    start_iteration: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> Iterator[Batch]:
    """Endless (images [B, 3, H, W], labels [B, H, W]) batches from ``start_iteration`` on.

    ``num_workers > 0`` builds whole batches in that many worker processes, in the same order.
    """
    plan = BatchPlan(batch_size, seed, rank, world_size)
    plan.check(len(dataset))
    if start_iteration < 0:
        raise UserInputError(f"The start iteration must be non-negative, not {start_iteration}.")
    by_iteration = _BatchesByIteration(dataset, plan)
    if num_workers <= 0:
        return (by_iteration[k] for k in itertools.count(start_iteration))
    endless = itertools.count(start_iteration)
    return iter(DataLoader(by_iteration, batch_size=None, sampler=endless, num_workers=num_workers))
