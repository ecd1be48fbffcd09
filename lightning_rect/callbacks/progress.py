"""``ThrottledProgressBar``: Lightning's tqdm bar, redrawn at most twice a second."""

from __future__ import annotations

import math
import time

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn at most every ``min_interval`` seconds.

    The stock bar redraws after every batch; at the paper's minibatch of 10 that alone costs
    several percent of the training time. Lightning's bar sets its position from the batch index,
    so skipping a batch-end call loses nothing: the next drawn one shows the right count. The last
    batch of a loop is always drawn. The CLI uses this bar unless a config names a progress bar.
    """

    def __init__(self, min_interval: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_interval = min_interval
        self._last_draw = 0.0

    def _due(self, current: int, total: int | float) -> bool:
        now = time.monotonic()
        last = math.isfinite(total) and current >= total
        if last or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            return True
        return False

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._due(batch_idx + 1, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._due(batch_idx + 1, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    @override
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if self._due(batch_idx + 1, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
