"""``SparsityMonitor``: exact sparsity and dead units of every hidden layer, in any Lightning project.

Logged names (``<stage>`` is ``train``, ``val`` or ``test``; layers are numbered from 1):

- ``<stage>/sparsity/layer_<k>``: fraction of layer k's outputs that are exactly 0 over the epoch;
- ``<stage>/sparsity/mean``: the mean of those over layers;
- ``<stage>/dead/layer_<k>``: fraction of layer k's units that output 0 for every example of the
  epoch (the whole validation or test pass; for training, the whole training epoch);
- ``<stage>/dead/mean``: the mean over layers.

How it stays cheap: a forward hook on each watched module adds the number of non-zero outputs of
each unit into a per-unit counter on the device (two or three small kernels per layer and step, and
no host sync).
At the end of the epoch the counters go into torchmetrics ``UnitActivity`` objects whose
``compute()`` sums them over DDP ranks, so the logged values describe the whole data set.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Sequence

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_rect.activations import ACTIVATIONS
from lightning_rect.checkpoints import last_checkpoint_path
from lightning_rect.errors import ConfigError, DivergenceError
from lightning_rect.metrics import UnitActivity, activity_fractions

#: Watched when a module neither defines ``sparsity_modules()`` nor is given ``modules``.
DEFAULT_TYPES = (nn.ReLU, nn.Tanh, nn.Softplus, nn.Sigmoid, nn.LeakyReLU, nn.GELU)
#: torch modules whose outputs are never negative (lightning_rect's own say so with ``nonnegative``).
NONNEGATIVE_TYPES = (nn.ReLU, nn.ReLU6, nn.Softplus, nn.Sigmoid, nn.Hardsigmoid)


class SparsityMonitor(Callback):
    """Args:
        modules: which modules' outputs to measure, each a qualified module name (as in
            ``named_modules()``, e.g. ``net.2``) or a class name (``ReLU``, ``torch.nn.ReLU``).
            Default: the LightningModule's ``sparsity_modules()`` (``SparseMLP``, ``StackedDAE``),
            else every ReLU/Tanh/Softplus/Sigmoid/LeakyReLU/GELU module.
        train_log_every_n_steps: also log the epoch-to-date training values every n steps, as
            ``train_step/sparsity/layer_<k>`` and ``train_step/dead/layer_<k>`` (costs a host sync
            each time); ``None`` (default) logs training values once per epoch only.
        epoch_logs: log the per-epoch values. A second monitor added only for per-step logs (the
            ``callbacks/sparsity_steps.yaml`` preset) sets it to false so names are not logged twice.
    """

    def __init__(self, modules: Sequence[str] | None = None, train_log_every_n_steps: int | None = None,
                 epoch_logs: bool = True) -> None:
        self.modules = list(modules) if modules is not None else None
        self.train_log_every_n_steps = train_log_every_n_steps
        self.epoch_logs = epoch_logs
        self._handles: list[RemovableHandle] = []
        self._stage: str | None = None
        self._counters: dict[int, UnitCounter] = {}
        self._metrics: dict[tuple[str, int], UnitActivity] = {}
        self._warned_dead: set[tuple[str, int]] = set()

    # -- which modules ----------------------------------------------------------------------------
    def watched_modules(self, pl_module: LightningModule) -> list[nn.Module]:
        if self.modules is None:
            if hasattr(pl_module, "sparsity_modules"):
                return list(pl_module.sparsity_modules())
            found = [m for m in pl_module.modules() if isinstance(m, DEFAULT_TYPES + tuple(_registered_types()))]
        else:
            found = [m for name, m in pl_module.named_modules() if name and _matches(name, m, self.modules)]
        if not found:
            candidates = sorted({type(m).__name__ for m in pl_module.modules()} - {type(pl_module).__name__})
            raise ConfigError(
                f"SparsityMonitor found no module to watch in {type(pl_module).__name__} "
                f"(modules={self.modules}); pass module names or class names, e.g. one of {candidates}"
            )
        return found

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()
        for index, module in enumerate(self.watched_modules(pl_module)):
            self._handles.append(module.register_forward_hook(self._make_hook(index, is_nonnegative(module))))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, index: int, nonnegative: bool):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._stage is not None:
                counter = self._counters.get(index)
                if counter is None:
                    counter = self._counters[index] = UnitCounter(nonnegative)
                counter.add(output)

        # Under torch.compile the hook runs eagerly between graph pieces: traced, its Python counters
        # would be baked into the graph as constants and force a recompile at every step.
        return torch.compiler.disable(hook)

    # -- epoch boundaries -------------------------------------------------------------------------
    def _start(self, stage: str) -> None:
        self._stage = stage
        self._counters = {}

    def _finish(self, stage: str, pl_module: LightningModule) -> None:
        values = self._compute(stage, pl_module) if self.epoch_logs else {}
        if values:
            pl_module.log_dict(values, sync_dist=True)
            self._warn_dead_layers(stage, values)
        self._stage = None

    def _warn_dead_layers(self, stage: str, values: dict[str, torch.Tensor]) -> None:
        """Once per layer and stage: a layer whose units were all dead for a whole epoch passes
        no gradient, so the layers below it stop learning (one host sync per epoch)."""
        for index in sorted(self._counters):
            dead = values.get(f"{stage}/dead/layer_{index + 1}")
            if dead is None or (stage, index) in self._warned_dead or float(dead) < 1.0:
                continue
            self._warned_dead.add((stage, index))
            rank_zero_warn(
                f"SparsityMonitor: every unit of layer {index + 1} output exactly 0 for the whole {stage} epoch, so "
                "no gradient flows through it and the layers below stop learning; lower the learning rate or the "
                "l1 coefficient, or pre-train that layer for more epochs"
            )

    def _compute(self, stage: str, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        sparsities, deads = [], []
        for index in sorted(self._counters):
            counter = self._counters[index]
            metric = self._metric(stage, index, counter.counts)
            metric.update(counter.counts, counter.rows)
            sparsity, dead = metric.compute()
            metric.reset()
            values[f"{stage}/sparsity/layer_{index + 1}"] = sparsity
            values[f"{stage}/dead/layer_{index + 1}"] = dead
            sparsities.append(sparsity)
            deads.append(dead)
        if sparsities:
            values[f"{stage}/sparsity/mean"] = torch.stack(sparsities).mean()
            values[f"{stage}/dead/mean"] = torch.stack(deads).mean()
        return values

    def _metric(self, stage: str, index: int, like: torch.Tensor) -> UnitActivity:
        key = (stage, index)
        if key not in self._metrics:
            self._metrics[key] = UnitActivity(like.numel()).to(like.device)
        return self._metrics[key]

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("train")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        every = self.train_log_every_n_steps
        if every and (trainer.global_step % every == 0) and self._counters:
            running = {}
            for index in sorted(self._counters):
                counter = self._counters[index]
                sparsity, dead = activity_fractions(counter.counts, counter.rows)
                running[f"train_step/sparsity/layer_{index + 1}"] = sparsity
                running[f"train_step/dead/layer_{index + 1}"] = dead
            pl_module.log_dict(running, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("train", pl_module)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._resume_train = self._stage == "train"
        self._saved_train = self._counters
        if trainer.sanity_checking:
            self._stage = None
            return
        self._start("val")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish("val", pl_module)
        if self._resume_train:  # validation ran inside a training epoch: carry on counting training
            self._counters = self._saved_train
            self._stage = "train"

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("test", pl_module)


class UnitCounter:
    """Non-zero outputs per unit of one watched module, over the epoch so far.

    Counted as each output appears, while it is still in cache: ``|sign(h)|`` summed over the rows
    (exact, as each batch's sum is a small integer; 3x faster on CPU than ``count_nonzero(dim=0)``).
    For ``nonnegative`` outputs (rectifier, softplus, sigmoid) ``sign(h)`` is already 0 or 1, so the
    ``abs`` kernel is skipped (18 -> 15 us for a 100 x 1000 output on 2 CPU cores).
    Deferring the count to batch many steps was tried: re-reading the outputs later evicts the
    weights from cache and costs more than the small kernels it saves.
    """

    def __init__(self, nonnegative: bool = False) -> None:
        self.nonnegative = nonnegative
        self.counts: torch.Tensor | None = None
        self.rows = 0

    def add(self, output: torch.Tensor) -> None:
        out = output.detach()
        if out.dim() != 2:
            out = out.reshape(-1, out.shape[-1])
        signs = out.sign() if self.nonnegative else out.sign().abs_()
        counts = signs.sum(0)
        if self.counts is None:
            self.counts = counts.double()
        else:
            self.counts.add_(counts)
        self.rows += out.shape[0]


def is_nonnegative(module: nn.Module) -> bool:
    """Whether ``module``'s outputs are never negative, so counting needs no ``abs``."""
    return isinstance(module, NONNEGATIVE_TYPES) or getattr(module, "nonnegative", False) is True


def _matches(name: str, module: nn.Module, wanted: list[str]) -> bool:
    """``wanted`` entries are module names, class names, or importable class paths (``torch.nn.ReLU``)."""
    for entry in wanted:
        if entry == name or entry == type(module).__name__:
            return True
        cls = _import_class(entry)
        if cls is not None and isinstance(module, cls):
            return True
    return False


def _import_class(path: str) -> type | None:
    module_path, _, attr = path.rpartition(".")
    if not module_path:
        return None
    try:
        obj = getattr(importlib.import_module(module_path), attr)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) else None


def _registered_types() -> list[type]:
    return [obj for obj in (ACTIVATIONS.get(n) for n in ACTIVATIONS.names()) if isinstance(obj, type)]


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


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn at most every ``min_interval`` seconds.

    The stock bar redraws after every batch; at the paper's minibatch of 10 that alone costs
    several percent of the training time. Each redraw formats and writes the bar twice (count, then
    metrics); twice a second still looks live to a person.
    The CLI swaps it in for the default bar.
    """

    def __init__(self, min_interval: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_interval = min_interval
        self._last_draw = 0.0

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            return True
        return False
