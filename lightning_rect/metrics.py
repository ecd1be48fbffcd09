"""Small running measurements: sparsity fractions from per-unit counts, and the epoch's training loss."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric


def activity_fractions(nonzero: torch.Tensor, rows: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact sparsity, dead-unit fraction) from per-unit non-zero counts over ``rows`` examples."""
    sparsity = 1.0 - nonzero.sum() / max(rows * nonzero.numel(), 1)
    dead = (nonzero == 0).double().mean()
    return sparsity.float(), dead.float()


def as_metric(module: nn.Module) -> Metric:
    """``module``, an item of an ``nn.ModuleDict`` or ``nn.ModuleList`` of metrics, as the torchmetrics
    ``Metric`` it is (the containers hand their items to a type checker as plain ``nn.Module``s)."""
    if not isinstance(module, Metric):
        raise TypeError(f"expected a torchmetrics Metric, got {type(module).__name__}")
    return module


class LossAverage:
    """Epoch mean of the training loss, summed on the device without a sync per step.

    A torchmetrics ``update`` costs more than the rest of a step's bookkeeping at batch 10, so
    training losses go into a plain tensor. It is not a module buffer on purpose: DDP would
    overwrite every rank's buffers with rank 0's at each forward. Every rank runs the same number
    of steps, so logging ``pop()`` with ``sync_dist=True`` gives the global mean.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.steps = 0

    # Eager under torch.compile: traced, the step counter would be a constant of the graph and
    # force a recompile at every step.
    @torch.compiler.disable
    def add(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        self.total = loss.clone() if self.total is None else self.total.add_(loss)
        self.steps += 1

    def pop(self) -> torch.Tensor:
        if self.total is None:  # nothing added since the last pop: as the division by None did
            raise TypeError("LossAverage.pop() before any add()")
        mean = self.total / self.steps
        self.total, self.steps = None, 0
        return mean
