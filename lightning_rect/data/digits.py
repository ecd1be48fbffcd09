"""scikit-learn's bundled 8x8 handwritten digits: real data that needs no download."""

from __future__ import annotations

import torch

from lightning_rect.data.base import InMemoryDataModule, Split, fixed_split

#: Fixed split of the 1,797 images (seeded permutation, seed 0, independent of the run's seed).
DIGITS_SPLIT = {"train": 1197, "val": 300, "test": 300}


class DigitsDataModule(InMemoryDataModule):
    """8x8 digits, pixel values 0..16 scaled to [0, 1]; 1197 / 300 / 300 examples, 10 classes."""

    def __init__(
        self, batch_size: int = 10, eval_batch_size: int = 1000, labeled_fraction: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.input_size = 64
        self.num_classes = 10

    def load_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        parts = fixed_split(len(y), list(DIGITS_SPLIT.values()), seed=0)
        return {name: (x[idx], y[idx]) for name, idx in zip(DIGITS_SPLIT, parts)}
