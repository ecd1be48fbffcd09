"""What the models accept as a batch: ``(x, y)`` pairs, or bare ``x`` where labels are not needed."""

from __future__ import annotations

import torch

from lightning_rect.errors import ConfigError


def split_batch(batch: torch.Tensor | tuple | list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, labels or None)`` of a batch given as a tensor, ``(x,)``, ``(x, y)`` or ``[x, y]``."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1] if len(batch) > 1 else None
    raise ConfigError(f"a batch must be a tensor of inputs or an (inputs, labels) pair; got {type(batch).__name__}")


def labeled_batch(batch: torch.Tensor | tuple | list, model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)``; a batch without labels is one readable error (supervised training needs them)."""
    x, y = split_batch(batch)
    if y is None:
        raise ConfigError(f"{model} needs (inputs, labels) batches for training and evaluation; got inputs only")
    return x, y
