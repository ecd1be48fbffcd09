"""``DivergenceGuard``: stop a diverged run with one line naming the step and the fix."""

from __future__ import annotations

import math

from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_rect.checkpoints import last_checkpoint_path
from lightning_rect.errors import DivergenceError


class DivergenceGuard(Callback):
    """Stops training when the loss becomes NaN or infinite, naming the step and the fix.

    Rectifier networks trained with too large a learning rate blow up. Once the loss is NaN the
    weights are too, so the loss stays non-finite: reading it on the host every
    ``check_every_n_steps`` steps (not every step, which would cost a device sync) catches it within
    that many steps. Checkpoints already written (``last.ckpt``, the best one) stay as they were.
    The CLI adds one to every ``fit`` that has none.
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._last_good_step = -1

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        last_batch = batch_idx + 1 == trainer.num_training_batches
        if (batch_idx + 1) % self.check_every_n_steps and not last_batch:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        # global_step already counts this batch's optimizer step; report the step the loss came from
        step = max(trainer.global_step - 1, 0)
        value = float(loss.detach())
        if math.isfinite(value):
            self._last_good_step = step
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        last = last_checkpoint_path(trainer)
        kept = f"; the last good checkpoint is kept at {last}" if last else ""
        raise DivergenceError(
            f"training diverged: the loss was {value} at step {step} (epoch {trainer.current_epoch}; last finite "
            f"loss seen at step {self._last_good_step}); lower the learning rate (model lr is {lr}), e.g. "
            f"--model.init_args.lr={lr / 10 if lr else 0.001:g}{kept}"
        )
