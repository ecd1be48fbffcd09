"""Reviews in memory as compressed rows of feature indices, densified one minibatch at a time.

The paper's input is a binary presence vector over the most frequent features, about 0.6%
non-zero, so a review is stored as the indices of its features (int32, no values) and becomes a
dense float row only inside a minibatch: ~4 bytes per present feature instead of 4 * vocab_size
bytes per review.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np
import torch


class SparseRows:
    """Rows of a 0/1 matrix stored as the column indices of their ones (CSR without values).

    ``rows[idx]`` (``idx`` a LongTensor) returns the selected rows, still compact; ``to_dense()``
    builds the float matrix. Both are a handful of tensor ops whatever the number of rows, so a
    minibatch costs no per-sample Python.
    """

    def __init__(self, indices: torch.Tensor, offsets: torch.Tensor, num_columns: int) -> None:
        self.indices = indices.to(torch.int32)
        self.offsets = offsets.to(torch.int64)
        self.num_columns = num_columns

    @classmethod
    def from_lengths(cls, indices: torch.Tensor, lengths: torch.Tensor, num_columns: int) -> SparseRows:
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        torch.cumsum(lengths.to(torch.int64), dim=0, out=offsets[1:])
        return cls(indices, offsets, num_columns)

    @classmethod
    def from_arrays(cls, indices: array, lengths: array, num_columns: int) -> SparseRows:
        """Rows from the ``array('i')`` buffers a parser fills."""
        return cls.from_lengths(int32_tensor(indices), int32_tensor(lengths), num_columns)

    @classmethod
    def cat(cls, parts: Sequence[SparseRows], num_columns: int) -> SparseRows:
        if not parts:
            return cls(torch.zeros(0, dtype=torch.int32), torch.zeros(1, dtype=torch.int64), num_columns)
        return cls.from_lengths(
            torch.cat([p.indices for p in parts]), torch.cat([p.lengths() for p in parts]), num_columns
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def nnz(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, rows: torch.Tensor) -> SparseRows:
        rows = torch.as_tensor(rows, dtype=torch.int64)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        out = SparseRows.from_lengths(torch.zeros(0), lengths, self.num_columns)
        total = out.nnz()
        # Position of every kept entry in self.indices: its row's old start + rank within the row.
        rank = torch.arange(total) - torch.repeat_interleave(out.offsets[:-1], lengths, output_size=total)
        out.indices = self.indices[torch.repeat_interleave(starts, lengths, output_size=total) + rank]
        return out

    def to_dense(self) -> torch.Tensor:
        """Float32 0/1 matrix, one row per stored row."""
        rows = torch.repeat_interleave(torch.arange(len(self)), self.lengths(), output_size=self.nnz())
        # numpy's calloc-backed zeros, not torch.zeros: torch fills a 10 x 5000 batch with its
        # intra-op thread pool, and when another process holds a core every such fill waits for
        # a descheduled thread, which slows batching by orders of magnitude on busy cores
        # (benchmarks/README.md, "amazon_loading.py").
        dense = torch.from_numpy(np.zeros((len(self), self.num_columns), dtype=np.float32))
        dense.view(-1)[rows * self.num_columns + self.indices] = 1
        return dense

    def remap(self, table: torch.Tensor, num_columns: int) -> SparseRows:
        """Translate column ids through ``table`` (old id -> new id, -1 = drop)."""
        new = table[self.indices.long()]
        keep = new >= 0
        rows = torch.repeat_interleave(torch.arange(len(self)), self.lengths(), output_size=self.nnz())
        return SparseRows.from_lengths(new[keep], torch.bincount(rows[keep], minlength=len(self)), num_columns)


class Densify:
    """Batch transform: ``SparseRows`` -> dense float32 presence matrix (picklable for DDP)."""

    def __call__(self, rows: SparseRows) -> torch.Tensor:
        return rows.to_dense()


def int32_tensor(values: array) -> torch.Tensor:
    """Copy of an ``array('i')`` as a tensor, without a Python loop over its items."""
    if not len(values):
        return torch.zeros(0, dtype=torch.int32)
    return torch.frombuffer(values, dtype=torch.int32).clone()
