"""``EpochLine``: one short line per validation, which ``reproduce`` shows while a run trains.

A tqdm bar redraws with carriage returns; piped through the parent process it is either lost or
floods the terminal. This callback prints a plain line instead (epoch, step, the metrics that
matter, time), marked with ``PREFIX`` so the parent can tell it from the rest of the output.
"""

from __future__ import annotations

import math
import sys
import time

from lightning import Callback, LightningModule, Trainer

PREFIX = "[reproduce] "
#: Metrics shown, in order, when logged; ``{k}`` is filled with the DAE layer in training.
#: ``val/sparsity/mean``: the SparsityMonitor's mean over layers of each layer's exact-zero fraction.
SHOWN = ("train/loss", "val/err", "val/sparsity/mean", "train/pretrain/layer_{k}/recon", "val/pretrain/layer_{k}/recon")
#: Metrics shown as percentages.
PERCENT = ("val/err", "val/sparsity/mean")


class EpochLine(Callback):
    """Prints ``epoch 3/10 step 15000: val/err 1.92% ...`` after each validation (sanity checks excepted)."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        layer = getattr(pl_module, "current_layer", None)
        parts = []
        for name in SHOWN:
            if "{k}" in name:
                if layer is None:
                    continue
                name = name.format(k=layer + 1)
            metric = trainer.callback_metrics.get(name)
            if metric is None:
                continue
            value = float(metric)
            short = name.replace("train/pretrain/", "train/").replace("val/pretrain/", "val/")
            if name in PERCENT and math.isfinite(value):
                parts.append(f"{short} {100 * value:.2f}%")
            else:
                parts.append(f"{short} {value:.4g}")
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        where = f"epoch {trainer.current_epoch + 1}/{epochs} step {trainer.global_step}"
        if layer is not None:
            where += f" (layer {layer + 1})"
        elapsed = time.perf_counter() - self._started
        print(f"{PREFIX}{where}: {', '.join(parts) or 'no metrics yet'} [{elapsed:.0f} s]", file=sys.stdout, flush=True)
