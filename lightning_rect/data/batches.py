"""Serve minibatches from tensors held in memory through a plain ``torch.utils.data.DataLoader``.

At the paper's minibatch size of 10, fetching examples one by one and collating them costs more
than the model's step, so ``InMemoryDataset`` serves a whole batch per list of indices
(``__getitems__``, which the ``DataLoader`` calls with each batch's indices) and the collate
function returns it as is: one indexing per batch, one vectorised transform.

Being a real ``DataLoader`` is what Lightning and Fabric rely on: ``overfit_batches`` swaps in a
``SequentialSampler``, prediction wraps the batch sampler to report batch indices, the batch-size
tuner reads ``len(dataset)``, ``fabric.setup_dataloaders`` accepts it. The sampler,
``EpochShuffle``, is a ``DistributedSampler``: under DDP Lightning and Fabric keep it rather than
wrapping it in theirs (which would shard the already sharded indices again), and they call its
``set_epoch(epoch)`` at every epoch, which seeds that epoch's permutation, so a resumed run sees
the same order as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

BatchTransform = Callable[[torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


class EpochShuffle(DistributedSampler):
    """The indices one rank visits in one epoch.

    ``shuffle``: a permutation seeded by ``(seed, epoch)``, padded by wrapping around to a multiple
    of ``world_size`` and then strided by rank, so every rank gets the same number of batches (DDP
    needs that in training) and the ranks together cover the epoch.
    Without ``shuffle`` (evaluation) the order is fixed and nothing is padded: each rank takes every
    ``world_size``-th example, so metrics summed over ranks count every example exactly once.

    Its ``num_samples`` (this rank's share) and ``total_size`` (all ranks' shares together) mean
    what they mean for torch's sampler, so code that reads a ``DistributedSampler``'s padding from
    them (``SparsityMonitor``) gets it right in both modes.
    """

    def __init__(self, num_examples: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        # Only len() of the "dataset" is used: the indices are drawn here, not by torch's sampler.
        super().__init__(
            range(num_examples),  # type: ignore[arg-type]  # torch types it as a Dataset; only its len() is read
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.num_examples = num_examples
        self.world_size = world_size
        if not shuffle:  # unpadded strided shares: uneven by at most one, together each example once
            self.num_samples = len(range(rank, num_examples, world_size))
            self.total_size = num_examples

    @property
    def padding(self) -> int:
        """How many of this rank's indices repeat an example to even out the ranks: the last one of
        the share when the padded end of the permutation falls to this rank (``SparsityMonitor``
        leaves it uncounted)."""
        return int(self.total_size - self.world_size + self.rank >= self.num_examples)

    def indices(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.rank, self.num_examples, self.world_size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        if self.total_size > self.num_examples:
            order = torch.cat([order, order[: self.total_size - self.num_examples]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


class InMemoryDataset(Dataset):
    """``(transform(x[idx]), y[idx])`` for a whole list of indices at once.

    ``x`` may be stored compactly (uint8 images, Amazon's sparse rows): ``transform`` turns one
    batch into float inputs, so the conversion is vectorised and memory holds the compact copy only.
    """

    def __init__(self, x, y: torch.Tensor, transform: BatchTransform | None = None) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        # index_select: a few microseconds less than x[idx] at batch 10 (Amazon's rows only index)
        xb = self.x.index_select(0, idx) if isinstance(self.x, torch.Tensor) else self.x[idx]
        return (self.transform(xb) if self.transform is not None else xb), self.y.index_select(0, idx)

    def __getitem__(self, index: int) -> Batch:
        xb, yb = self.__getitems__([index])
        return xb[0], yb[0]


def as_is(batch: Batch) -> Batch:
    """Collate function: ``InMemoryDataset.__getitems__`` already returns the batch (module-level, so picklable)."""
    return batch


def in_memory_loader(
    x,
    y: torch.Tensor,
    batch_size: int,
    sampler: EpochShuffle,
    transform: BatchTransform | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` yielding ``(transform(x[idx]), y[idx])`` for consecutive chunks of ``sampler``'s indices."""
    return DataLoader(
        InMemoryDataset(x, y, transform),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=as_is,  # type: ignore[arg-type]  # gets __getitems__' batch, not the list torch types it with
    )


#: The name of the class this module served batches with before; it builds the ``DataLoader`` now.
InMemoryBatches = in_memory_loader


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
