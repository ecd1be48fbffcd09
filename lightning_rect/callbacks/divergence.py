"""``DivergenceGuard``: stop a diverged run, or one fed NaN or infinite inputs, with one line naming
the step, the cause and the fix."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_rect.checkpoint import last_checkpoint_path
from lightning_rect.errors import DivergenceError, NonFiniteInputError
from lightning_rect.grid import PAPER_LRS
from lightning_rect.lightning_attrs import trainer_datamodule


class DivergenceGuard(Callback):
    """Stops training when the loss becomes NaN or infinite, naming the step, the cause and the fix.

    Rectifier networks trained with too large a learning rate blow up. Once the loss is NaN the
    weights are too, so the loss stays non-finite: reading it on the host every
    ``check_every_n_steps`` steps (not every step, which would cost a device sync) catches it within
    that many steps. Checkpoints already written (``last.ckpt``, the best one) stay as they were.

    Before blaming the learning rate it looks at the inputs: the training split of an in-memory data
    module (``datamodule.splits["train"]``, all of it), then every training batch since the last
    check, from any dataloader: each batch's count of non-finite inputs is taken on the device as
    it arrives (no sync) and read only when the loss went bad. NaN or infinite inputs are named as
    the cause instead. The suggested learning rate is the next value of the paper's grid
    ``PAPER_LRS`` below the current one. Validation and test batches are checked before the model
    sees them (one host sync per evaluation batch): torchmetrics' ``MeanMetric`` would silently drop
    their NaN losses and report an error rate computed from the rest. The CLI adds one to every ``fit`` that has none.
    """

    def __init__(self, check_every_n_steps: int = 20, check_eval_inputs: bool = True) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.check_eval_inputs = check_eval_inputs
        self._last_good_step: int | None = None
        # (batch index, count of non-finite inputs on the device) of the training batches since the last check
        self._unchecked: list[tuple[int, torch.Tensor]] = []

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        counts = [(~torch.isfinite(t)).sum() for _, t in _floating_parts(batch)]
        if counts:
            self._unchecked.append((batch_idx, torch.stack(counts).sum()))

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        last_batch = batch_idx + 1 == trainer.num_training_batches
        if (batch_idx + 1) % self.check_every_n_steps and not last_batch:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        unchecked, self._unchecked = self._unchecked, []
        if loss is None:
            return
        # global_step already counts this batch's optimizer step; report the step the loss came from
        step = max(trainer.global_step - 1, 0)
        value = float(loss.detach())
        if math.isfinite(value):
            self._last_good_step = step
            return
        seen = (
            "no finite loss was seen"
            if self._last_good_step is None
            else f"last finite loss seen at step {self._last_good_step}"
        )
        where = f"the loss was {value} at step {step} (epoch {trainer.current_epoch}; {seen})"
        last = last_checkpoint_path(trainer)
        kept = f"; the last good checkpoint is kept at {last}" if last else ""
        bad_inputs = (
            nonfinite_in_training_split(trainer)
            or nonfinite_in_batches(unchecked, trainer.current_epoch)
            or nonfinite_in_batch(batch, "this batch")
        )
        if bad_inputs:
            raise NonFiniteInputError(
                f"training stopped: {where} because {bad_inputs}; the learning rate is not the cause: "
                f"remove or repair those values in the data ({_data_name(trainer, 'training')}){kept}"
            )
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        raise DivergenceError(f"training diverged: {where}; {lr_advice(lr)}{kept}")

    @override
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._check_eval_batch(trainer, "validation", batch, batch_idx)

    @override
    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._check_eval_batch(trainer, "test", batch, batch_idx)

    def _check_eval_batch(self, trainer: Trainer, stage: str, batch, batch_idx: int) -> None:
        if not self.check_eval_inputs:
            return
        bad = nonfinite_in_batch(batch, f"{stage} batch {batch_idx}")
        if bad:
            when = " (sanity check before training)" if trainer.sanity_checking else ""
            raise NonFiniteInputError(
                f"{stage} stopped{when}: {bad}; their losses would be dropped silently and the {stage} error "
                f"computed from the rest: remove or repair those values in the data ({_data_name(trainer, stage)})"
            )


def lr_advice(lr: float | None) -> str:
    """Lower the learning rate to the next value of the paper's grid, or try the grid when none is lower."""
    grid = ", ".join(f"{v:g}" for v in PAPER_LRS)
    if lr is None:
        return f"lower the learning rate (the paper's grid: {grid})"
    lower = [v for v in PAPER_LRS if v < lr * (1 - 1e-9)]
    if lower:
        return (
            f"lower the learning rate (model lr is {lr:g}), e.g. --model.init_args.lr={lower[0]:g}, the next "
            f"value below it in the paper's grid {grid}"
        )
    return (
        f"the learning rate {lr:g} is already at or below the paper's grid {grid}: try the grid's values "
        "(--model.init_args.lr=...) with a smaller l1, and check the data"
    )


def _floating_parts(batch) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the floating-point tensors of a batch: a tensor, a tuple/list or a dict."""
    if isinstance(batch, torch.Tensor):
        parts = [("inputs", batch)]
    elif isinstance(batch, (tuple, list)):
        names = ["inputs", "labels"]
        parts = [(names[i] if i < len(names) else f"element {i}", t) for i, t in enumerate(batch)]
    elif isinstance(batch, dict):
        parts = [(str(k), t) for k, t in batch.items()]
    else:
        parts = []
    for name, tensor in parts:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            yield name, tensor


def _counts(tensor: torch.Tensor) -> str:
    """'1 NaN value', '3 NaN and 1 infinite values'."""
    nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
    kinds = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if part)
    return f"{kinds} value{'s' if nan + inf > 1 else ''}"


def nonfinite_in_batch(batch, where: str) -> str:
    """'the inputs of <where> hold 3 NaN values', or "" when every floating-point value is finite."""
    for name, tensor in _floating_parts(batch):
        if not bool(torch.isfinite(tensor).all()):
            return f"the {name} of {where} hold {_counts(tensor)}"
    return ""


def nonfinite_in_batches(counts: list[tuple[int, torch.Tensor]], epoch: int) -> str:
    """'the inputs of training batches 2 and 5 of epoch 0 hold 3 NaN or infinite values', or ""."""
    bad = [(index, int(count)) for index, count in counts if int(count)]
    if not bad:
        return ""
    shown = ", ".join(str(index) for index, _ in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    total = sum(count for _, count in bad)
    return (
        f"the inputs of training batch{'es' if len(bad) > 1 else ''} {shown} of epoch {epoch} hold {total} NaN "
        f"or infinite value{'s' if total > 1 else ''}"
    )


def nonfinite_in_training_split(trainer: Trainer) -> str:
    """Non-finite values in an in-memory data module's stored training inputs, or ""."""
    splits = getattr(trainer_datamodule(trainer), "splits", None)
    train = splits.get("train") if isinstance(splits, dict) else None
    x = train[0] if isinstance(train, (tuple, list)) and train else None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or bool(torch.isfinite(x).all()):
        return ""
    rows = (~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).nonzero().flatten().tolist()
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"the training inputs hold {_counts(x)} (training example{'s' if len(rows) > 1 else ''} {shown} of {len(x)})"


def _data_name(trainer: Trainer, stage: str) -> str:
    datamodule = trainer_datamodule(trainer)
    return f"data: {type(datamodule).__name__}" if datamodule is not None else f"the {stage} dataloader"
