"""Which features are the inputs: the most frequent ones, and the vocabulary a checkpoint carries."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from lightning_rect.checkpoint import load_checkpoint_file
from lightning_rect.errors import DataFileError

#: Lightning stores a data module's ``state_dict`` under its class's ``__qualname__``.
CHECKPOINT_KEY = "AmazonReviewsDataModule"
VOCAB_CHECKPOINT = "pass a .ckpt written by a fit on AmazonReviewsDataModule (runs/<name>/version_<N>/checkpoints/)"


def most_frequent(doc_freq: torch.Tensor, names: Sequence[str], k: int) -> list[str]:
    """The ``k`` features with the highest document frequency (> 0), ties in alphabetical order."""
    present = int((doc_freq > 0).sum())
    k = min(k, present)
    if k == 0:
        return []
    threshold = int(torch.topk(doc_freq, k).values[-1])
    candidates = torch.nonzero(doc_freq >= threshold).flatten()
    ranked = sorted(zip((-doc_freq[candidates]).tolist(), (names[i] for i in candidates.tolist())))
    return [name for _, name in ranked[:k]]


def vocab_from_checkpoint(path: str | os.PathLike) -> list[str]:
    """The vocabulary an ``AmazonReviewsDataModule`` saved into a Lightning checkpoint.

    The file is loaded safely (plain tensors and values only): one that holds other objects is
    refused with a one-line ``CheckpointError``, never unpickled with its code run.
    """
    checkpoint = load_checkpoint_file(path)
    state = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    vocab = state.get("vocab") if isinstance(state, dict) else None
    if not isinstance(vocab, (list, tuple)) or not all(isinstance(feature, str) for feature in vocab):
        raise DataFileError(
            f"{path} holds no Amazon vocabulary: it was not trained with AmazonReviewsDataModule; {VOCAB_CHECKPOINT}"
        )
    return list(vocab)
