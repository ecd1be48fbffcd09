"""Data modules with NaN inputs, for the divergence guard's tests (usable from the CLI as
``--data=helpers.bad_data.NaNDigits``, since the tests folder is on ``sys.path`` under pytest)."""

from __future__ import annotations

from typing import Literal

from lightning_rect.data import DigitsDataModule
from lightning_rect.data.base import Split


class NaNDigits(DigitsDataModule):
    """The bundled digits with one NaN pixel in example ``example`` of ``split``."""

    def __init__(self, split: Literal["train", "val", "test"] = "train", example: int = 3, batch_size: int = 10,
                 eval_batch_size: int = 1000, labeled_fraction: float = 1.0, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.split = split
        self.example = example

    def load_splits(self) -> dict[str, Split]:
        splits = super().load_splits()
        x, y = splits[self.split]
        x = x.clone()
        x[self.example, 5] = float("nan")
        return {**splits, self.split: (x, y)}
