"""A callback that sends the process a signal at a chosen training step, as a user or a scheduler would."""

from __future__ import annotations

import os
import signal

from lightning import Callback


class SignalAt(Callback):
    """Sends ``signal`` (a name: SIGINT, SIGTERM, SIGHUP) to this process when ``global_step`` reaches ``step``,
    ``times`` times in a row; never in a fit resumed from a checkpoint (its resume would be stopped again)."""

    def __init__(self, signal: str = "SIGINT", step: int = 150, times: int = 1) -> None:
        self.signal, self.step, self.times = signal, step, times

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, self.signal))
