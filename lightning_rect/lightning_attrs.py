"""Typed reads of what Lightning sets on its objects from outside their classes.

The Trainer's connectors assign ``trainer.fast_dev_run``, ``trainer.callbacks`` and ``trainer.datamodule``,
and Lightning's module and strategies assign ``rank_zero_only.rank``, so a type checker finds none of
them on the class or the function. Each is read here, in one place, with its type.
"""

from __future__ import annotations

from lightning import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only


def trainer_fast_dev_run(trainer: Trainer) -> int | bool:
    """``trainer.fast_dev_run``: False, or the number of batches each loop runs (True is 1)."""
    return trainer.fast_dev_run  # type: ignore[attr-defined]  # set by the Trainer's setup, not declared


def trainer_callbacks(trainer: Trainer) -> list[Callback]:
    """``trainer.callbacks``: every callback the Trainer runs, in order."""
    return trainer.callbacks  # type: ignore[attr-defined]  # set by the callback connector, not declared


def trainer_datamodule(trainer: Trainer) -> LightningDataModule | None:
    """``trainer.datamodule``: the datamodule of the running stage, or None."""
    return trainer.datamodule  # type: ignore[attr-defined]  # set by the data connector, not declared


def process_rank() -> int:
    """``rank_zero_only.rank``: this process's global rank (0 without distributed training)."""
    return rank_zero_only.rank  # type: ignore[attr-defined]  # set on the function by Lightning, not declared
