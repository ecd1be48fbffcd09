"""torchmetrics state for sparsity: sums on the device, reduced across DDP ranks at ``compute()``."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ExactSparsity(Metric):
    """Fraction of activations that are exactly 0, over everything seen since the last reset."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("zeros", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, activations: torch.Tensor) -> None:
        self.zeros += (activations == 0).sum()
        self.total += activations.numel()

    def compute(self) -> torch.Tensor:
        return (self.zeros / self.total.clamp_min(1)).float()


class UnitActivity(Metric):
    """Per-unit count of non-zero outputs plus the number of rows seen; both sum-reduced across ranks.

    From these two states come both of the paper's measurements: exact sparsity (the fraction of
    outputs that are exactly 0) and dead units (units with no non-zero output at all). A unit alive
    on any rank has a count > 0 after the sum, so it is alive globally.
    """

    full_state_update = False

    def __init__(self, num_units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("nonzero", default=torch.zeros(num_units, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rows", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nonzero_per_unit: torch.Tensor, rows: int | torch.Tensor) -> None:
        self.nonzero += nonzero_per_unit.to(self.nonzero.dtype)
        self.rows += rows

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(exact sparsity, dead-unit fraction)."""
        return activity_fractions(self.nonzero, self.rows)


def activity_fractions(nonzero: torch.Tensor, rows: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact sparsity, dead-unit fraction) from per-unit non-zero counts over ``rows`` examples."""
    sparsity = 1.0 - nonzero.sum() / max(rows * nonzero.numel(), 1)
    dead = (nonzero == 0).double().mean()
    return sparsity.float(), dead.float()


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

    def add(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        self.total = loss.clone() if self.total is None else self.total.add_(loss)
        self.steps += 1

    def pop(self) -> torch.Tensor:
        mean = self.total / self.steps
        self.total, self.steps = None, 0
        return mean
