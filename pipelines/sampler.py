"""A seeded, shardable training sampler that can start in the middle of an epoch.

``torch.utils.data.DistributedSampler`` already gives every process its shard of a permutation that
depends only on ``(seed, epoch)``; it has no way to skip what an interrupted run already consumed.
:class:`ResumableSampler` adds that offset, so a resumed run sees exactly the batches the
uninterrupted run would have seen next.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (explicit rank and world size, so it works without a process group)
    whose iteration starts ``start_index`` samples into this process's shard of the epoch.

    Args:
        dataset: anything with ``len``.
        rank, world_size: this process's place (0 and 1 in a single process).
        seed: the permutation of epoch ``e`` is drawn from ``seed + e``.
        shuffle: permute (training) or keep the dataset order.
    """

    def __init__(self, dataset: Sized, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start_index = 0

    def set_position(self, epoch: int, start_index: int = 0) -> None:
        """Iterate epoch ``epoch`` from sample ``start_index`` of this process's shard."""
        self.set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start_index, None)

    def __len__(self) -> int:
        return max(self.num_samples - self.start_index, 0)
