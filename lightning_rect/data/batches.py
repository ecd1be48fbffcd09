"""Serve minibatches by slicing tensors held in memory: no per-sample ``__getitem__``, no collate.

At the paper's minibatch size of 10 a ``DataLoader`` spends more time collating samples than the
model spends computing, so the data modules hand the Trainer an ``InMemoryBatches`` instead. It is
a plain iterable with ``len()``; Lightning calls ``sampler.set_epoch(epoch)`` on it at every epoch
(the same hook it uses for ``DistributedSampler``), which seeds that epoch's permutation, so a
resumed run sees the same order as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


class EpochShuffle:
    """The indices one rank visits in one epoch.

    ``shuffle``: a permutation seeded by ``(seed, epoch)``, padded by wrapping around to a multiple
    of ``world_size`` and then strided by rank, so every rank gets the same number of batches (DDP
    needs that in training) and the ranks together cover the epoch.
    Without ``shuffle`` (evaluation) the order is fixed and nothing is padded: each rank takes every
    ``world_size``-th example, so metrics summed over ranks count every example exactly once.
    """

    def __init__(self, num_examples: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.num_examples = num_examples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.num_examples / self.world_size)
        return len(range(self.rank, self.num_examples, self.world_size))

    @property
    def padding(self) -> int:
        """How many of this rank's indices repeat an example to even out the ranks: the last one of
        the share when the padded end of the permutation falls to this rank (``SparsityMonitor``
        leaves it uncounted)."""
        if not self.shuffle:
            return 0
        return int(len(self) * self.world_size - self.world_size + self.rank >= self.num_examples)

    def indices(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.rank, self.num_examples, self.world_size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        padded = len(self) * self.world_size
        if padded > self.num_examples:
            order = torch.cat([order, order[: padded - self.num_examples]])
        return order[self.rank :: self.world_size]


class InMemoryBatches:
    """Yields ``(transform(x[idx]), y[idx])`` for consecutive chunks of the epoch's indices.

    ``x`` may be stored compactly (uint8 images); ``transform`` turns one batch into float inputs,
    so the conversion is vectorised and memory holds the compact copy only.
    """

    batch_sampler = None  # mirrors DataLoader's attributes, which Lightning inspects

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, sampler: EpochShuffle,
                 transform: BatchTransform | None = None, drop_last: bool = False) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.sampler = sampler
        self.transform = transform
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.sampler.indices()
        x, y, transform = self.x, self.y, self.transform
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = indices[start : start + self.batch_size]
            xb = x[idx]
            yield (transform(xb) if transform is not None else xb), y[idx]


class Affine:
    """Batch transform ``x.float() * scale + offset``, flattened to vectors (picklable for DDP)."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0, flatten: bool = True) -> None:
        self.scale, self.offset, self.flatten = scale, offset, flatten

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.flatten:
            x = x.flatten(1)
        if self.scale != 1.0:
            x = x * self.scale
        if self.offset != 0.0:
            x = x + self.offset
        return x
