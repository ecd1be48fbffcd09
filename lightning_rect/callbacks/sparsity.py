"""``SparsityMonitor``: exact sparsity and dead units of hidden layers, in any Lightning project.

Logged names (``<stage>`` is ``train``, ``val`` or ``test``; ``<layer>`` is ``layer_<k>`` (from 1)
for models that list their hidden activations in ``sparsity_modules()``, as ``SparseMLP`` and
``StackedDAE`` do, and the module's qualified name (``features.1``) for modules chosen with
``modules=``):

- ``<stage>/sparsity/<layer>``: fraction of the layer's outputs that are exactly 0 over the epoch;
- ``<stage>/sparsity/mean``: the mean of those over layers (every layer weighs the same, whatever
  its width);
- ``<stage>/dead/<layer>``: fraction of the layer's units that output 0 for every example of the
  epoch (the whole validation or test pass; for training, the whole training epoch);
- ``<stage>/dead/mean``: the mean over layers.

What a *unit* is: the outputs along ``unit_dim`` (default 1): a feature of an ``N x F`` output, a
channel of an ``N x C x H x W`` convolution output (a channel is dead when it is 0 at every
position of every example). For ``N x T x F`` sequence outputs pass ``unit_dim=-1``.

A module applied at several places in one forward (one ``nn.ReLU`` shared by two layers) is
counted per call site: ``<name>@1``, ``<name>@2``, ... in call order, numbered afresh at every
forward of the LightningModule and every batch, so a step that runs the model twice counts both
passes toward the same sites. Calls made while Lightning runs the backward pass are not counted:
activation checkpointing (``torch.utils.checkpoint``) recomputes the forward there, and those
outputs were already counted. So the layers, and what they count, are the same in every stage. A
layer a model declares in ``sparsity_modules()`` is one layer however often it runs in a step
(``StackedDAE`` evaluates each layer's reconstruction with its own pass through the layers below):
all its calls count toward it. Module names are the user's: the ``_orig_mod`` that
``torch.compile`` inserts into a compiled submodule's names is left out.

Several validation or test dataloaders are counted one by one and logged with Lightning's suffix,
``<stage>/sparsity/<layer>/dataloader_idx_<N>`` (one dataloader keeps the plain names). Examples a
distributed sampler repeats to give every process the same number (``DistributedSampler`` pads
each process's share with copies of the first examples) are not counted, so values under DDP
cover each example once. Watched modules must return a tensor of (examples, units, ...): one
declared to return a list or tuple is refused at setup, one that returns one anyway at its first
call. Modules whose outputs are almost never exactly 0 (tanh, sigmoid, softplus, GELU) are named in
an info line at setup: their exact sparsity is 0 by construction.

How it stays cheap: a forward hook on each watched module adds the number of non-zero outputs of
each unit into a per-unit counter on the device (two or three small kernels per layer and step,
no host sync). At the end of an epoch the counters of every layer are summed over DDP ranks in one
``strategy.reduce`` call, so the logged values describe the whole data set. The per-unit firing
rates (fraction of examples on which each unit was non-zero) of the last finished epoch of each
stage stay in ``firing_rates[stage][layer]``.

Firing-rate histograms of validation and test, logged to W&B and TensorBoard and saved as
``firing_rates.json`` in the run's folder (``histograms=True``, the default): see
``lightning_rect.callbacks.firing_rates``.

Several monitors on one Trainer (one per part of a model, say): give each a ``name``. A named
monitor puts its name before every layer it reports: ``<stage>/sparsity/<name>/<layer>``,
``<stage>/sparsity/<name>/mean``, ``train_step/...``, ``<stage>/firing_rate/<name>/<layer>``, the keys
of ``firing_rates`` and its layers in ``firing_rates.json``; a monitor without one keeps the plain
names above. Two monitors that would log the same name (two unnamed per-epoch monitors both log
``val/sparsity/mean``, which Lightning would silently average) are refused at setup. A per-epoch
monitor and a per-step one (``epoch_logs=False``, ``train_log_every_n_steps``: the
``callbacks/sparsity_steps.yaml`` preset) log different names, so they need none. Each monitor's
checkpoint state (the firing rates and histograms of the last finished epochs) is kept under its
own ``state_key``.

The monitor's hooks do not follow the model: a model pickled, ``torch.save``d or deep-copied while
it is watched (mid-fit) carries inert hooks in their place, so the copy pickles, and its forwards
are not counted as the watched model's.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, Fabric, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch._dynamo import OptimizedModule
from torch.utils.data import DistributedSampler
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_rect.activations import ACTIVATIONS, output_range
from lightning_rect.callbacks.firing_rates import (
    RATES_FILE,
    FiringRateHistogram,  # noqa: F401
    firing_rate_histogram,
    log_firing_rate_histograms,
    run_folder,
    save_firing_rates,
)
from lightning_rect.errors import ConfigError
from lightning_rect.lightning_attrs import trainer_callbacks
from lightning_rect.metrics import activity_fractions

#: Activation types listed as candidates when a model has no ``sparsity_modules()`` and no ``modules``.
ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Softplus, nn.Sigmoid, nn.LeakyReLU, nn.GELU)
#: torch modules whose outputs are never negative (lightning_rect's own say so with ``output_range``).
NONNEGATIVE_TYPES = (nn.ReLU, nn.ReLU6, nn.Softplus, nn.Sigmoid, nn.Hardsigmoid)
#: torch modules whose outputs are exactly 0 only for an input of exactly 0, if ever (lightning_rect's
#: own say so with ``exact_zeros = False``): their exact sparsity is 0 by construction.
NEVER_ZERO_TYPES = (
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Mish,
    nn.Softsign,
    nn.LogSigmoid,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Tanhshrink,
)
#: Containers that hold modules but are never called themselves, so a hook on them never fires.
UNCALLED_TYPES = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)
STAGES = ("train", "val", "test")
UNDER_FABRIC = (
    "SparsityMonitor is a lightning.Trainer callback (it counts during the Trainer's stages and "
    "logs through it), and Fabric runs no stages; fit with lightning.Trainer(callbacks="
    "[SparsityMonitor(...)]), or count your activations' exact zeros in your Fabric loop"
)


class SparsityMonitor(Callback):
    """Logs the exact sparsity (fraction of outputs that are exactly 0) and the dead units (0 on every
    example of the epoch) of each watched module, per stage and epoch, summed over DDP processes.

    A unit is one index along ``unit_dim`` of a module's output: a feature of an ``N x F`` output, a
    channel of an ``N x C x H x W`` one (a dead channel is 0 at every position of every example).
    Modules applied at several places in one forward are counted per call site (``act@1``, ``act@2``).

    Args:
        modules: which modules' outputs to measure, each a qualified module name (as in
            ``named_modules()``, e.g. ``features.1``) or a class name (``ReLU``, ``torch.nn.ReLU``).
            Default: the LightningModule's ``sparsity_modules()``. A model without that method must
            name its hidden activations (an output ``Sigmoid`` is not a hidden layer), and an entry
            that matches no module is an error.
        unit_dim: the dimension of a module's output that indexes its units (1; ``-1`` for ``N x T x F``).
        train_log_every_n_steps: also log the epoch-to-date training values every n steps, as
            ``train_step/sparsity/<layer>`` and ``train_step/dead/<layer>`` (this process's data
            only; costs a host sync each time); ``None`` (default) logs training values per epoch.
        epoch_logs: log the per-epoch values. A second monitor added only for per-step logs (the
            ``callbacks/sparsity_steps.yaml`` preset) sets it to false so names are not logged twice.
        histograms: at validation and test epoch ends, log each layer's firing-rate histogram to
            the W&B and TensorBoard loggers and save the rates as ``firing_rates.json`` in the run's
            folder (see ``lightning_rect.callbacks.firing_rates``); needs ``epoch_logs``.
        name: put before every layer this monitor reports (``val/sparsity/<name>/mean``), so that
            several monitors on one Trainer log, save and checkpoint their own values.
            ``None`` (default): the plain names.
    """

    def __init__(
        self,
        modules: Sequence[str] | None = None,
        unit_dim: int = 1,
        train_log_every_n_steps: int | None = None,
        epoch_logs: bool = True,
        histograms: bool = True,
        name: str | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip("/")):
            raise ConfigError(
                f"SparsityMonitor: name={name!r} is not a name; give a word such as name='encoder', "
                "or leave it out for the plain names"
            )
        self.name = name.strip("/") if name is not None else None
        self.modules = list(modules) if modules is not None else None
        self.unit_dim = unit_dim
        self.train_log_every_n_steps = train_log_every_n_steps
        self.epoch_logs = epoch_logs
        self.histograms = histograms
        #: stage -> layer name -> per-unit firing rate of the last finished epoch (CPU tensors)
        self.firing_rates: dict[str, dict[str, torch.Tensor]] = {}
        #: stage (val, test) -> layer name -> firing-rate histogram of the last finished epoch
        self.firing_rate_histograms: dict[str, dict[str, FiringRateHistogram]] = {}
        self._log_dir: str | None = None  # where RATES_FILE goes; None: no logger, or histograms off
        self._handles: list[RemovableHandle] = []
        self._prefix = f"{self.name}/" if self.name else ""  # before every reported layer name
        self._stage: str | None = None  # the stage whose outputs the hooks count now, if any
        # Between a batch's start and end hooks only: a forward the user or a model runs elsewhere (an
        # export or trace in a callback, a pass over the training set between DAE layers) is not data.
        self._in_step = False
        # stage -> (dataloader index or None when the stage has one dataloader, name, call) -> counter
        self._counters: dict[str, dict[tuple[int | None, str, int], UnitCounter]] = {stage: {} for stage in STAGES}
        self._loader: int | None = None  # the dataloader of the current evaluation batch (None: the only one)
        self._padding = 0  # rows at the end of the current batch that repeat other examples (DDP padding)
        self._in_backward = False  # between Lightning's on_before_backward and on_after_backward
        self._calls: dict[str, int] = {}  # module name -> calls so far in the current forward
        self._sites: dict[str, int] = {}  # module name -> most calls seen in one forward
        self._warned_dead: set[tuple[str, str]] = set()
        self._noted_never_zero = False

    # -- which modules ----------------------------------------------------------------------------
    def watched_modules(self, pl_module: LightningModule) -> list[tuple[str, nn.Module]]:
        """(logged name, module) of every module whose outputs are counted."""
        if self.modules is None:
            sparsity_modules = getattr(pl_module, "sparsity_modules", None)  # the models' own method, if any
            if sparsity_modules is not None:
                return [(f"layer_{k}", m) for k, m in enumerate(sparsity_modules(), start=1)]
            candidates = [name for name, m in user_named_modules(pl_module) if isinstance(m, _activation_types())]
            raise ConfigError(
                f"SparsityMonitor: {type(pl_module).__name__} has no sparsity_modules(), so say which hidden "
                f"activations to watch: SparsityMonitor(modules=[...]) with module names, e.g. {candidates[:8]} "
                "(leave out an output activation, such as a final Sigmoid: it is not a hidden layer)"
            )
        named = user_named_modules(pl_module)
        unmatched = [entry for entry in self.modules if not any(_matches(entry, n, m) for n, m in named)]
        if unmatched:
            examples = [n for n, m in named if isinstance(m, _activation_types())][:4]
            raise ConfigError(
                f"SparsityMonitor: modules={self.modules}: {unmatched} match no module of {type(pl_module).__name__}; "
                f"use qualified names from named_modules() (e.g. {examples}) "
                "or class names such as ReLU"
            )
        watched = [(name, m) for name, m in named if any(_matches(entry, name, m) for entry in self.modules)]
        for name, module in watched:
            problem = static_output_problem(module)
            if problem:
                raise ConfigError(
                    f"SparsityMonitor: modules={self.modules}: {name!r} ({type(module).__name__}) "
                    f"{problem}, not a tensor of (examples, units, ...); "
                    f"{_watch_inside(name, module)}"
                )
        return watched

    @property
    @override
    def state_key(self) -> str:
        # Distinct for every pair of monitors that may share a Trainer (see _refuse_shared_names), so
        # each one's state has its own entry in a checkpoint's ``callbacks``.
        return self._generate_state_key(
            name=self.name,
            modules=self.modules,
            epoch_logs=self.epoch_logs,
            step_logs=bool(self.train_log_every_n_steps),
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        # Tensors, lists and numbers only: a checkpoint loads with ``weights_only=True``.
        return {
            "firing_rates": {stage: dict(rates) for stage, rates in self.firing_rates.items()},
            "firing_rate_histograms": {
                stage: {layer: {"counts": list(h.counts), "dead": h.dead} for layer, h in histograms.items()}
                for stage, histograms in self.firing_rate_histograms.items()
            },
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.firing_rates = {stage: dict(rates) for stage, rates in state_dict.get("firing_rates", {}).items()}
        self.firing_rate_histograms = {
            stage: {layer: FiringRateHistogram(tuple(h["counts"]), h["dead"]) for layer, h in histograms.items()}
            for stage, histograms in state_dict.get("firing_rate_histograms", {}).items()
        }

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if isinstance(trainer, Fabric):  # fabric.call("setup", ...) hands over the Fabric object itself
            raise ConfigError(UNDER_FABRIC)
        self._remove_hooks()
        watched = self.watched_modules(pl_module)
        self._refuse_shared_names(trainer, pl_module, {name for name, _ in watched})
        # ``run_folder`` is a broadcast under DDP: every rank asks, here, once per entry point.
        self._log_dir = run_folder(trainer) if self.histograms and self.epoch_logs else None
        per_call_site = self.modules is not None  # the model's own sparsity_modules(): one layer each
        for name, module in watched:
            hook = self._make_hook(name, is_nonnegative(module), per_call_site)
            self._handles.append(module.register_forward_hook(MonitorHook(hook)))
        # Call sites are numbered per forward of the model: a step that runs it twice does not add sites.
        self._handles.append(pl_module.register_forward_pre_hook(MonitorHook(self._new_pass)))
        self._note_never_zero(watched)

    def _refuse_shared_names(self, trainer: Trainer, pl_module: LightningModule, layers: set[str]) -> None:
        """Lightning averages two values logged under one name without a word, and a ModelCheckpoint or
        EarlyStopping watching it would act on a number neither monitor measured."""
        for other in trainer_callbacks(trainer):
            if other is self or not isinstance(other, SparsityMonitor) or other.name != self.name:
                continue
            shared = None
            if self.epoch_logs and other.epoch_logs:
                shared = f"val/sparsity/{self._prefix}mean"
            elif self.train_log_every_n_steps and other.train_log_every_n_steps:
                try:
                    theirs = {name for name, _ in other.watched_modules(pl_module)}
                except ConfigError:  # its own setup says what is wrong with it
                    continue
                if layers & theirs:
                    shared = f"train_step/sparsity/{self._prefix}{min(layers & theirs)}"
            if shared:
                raise ConfigError(
                    f"SparsityMonitor: two SparsityMonitors on this Trainer would both log {shared!r}, which Lightning "
                    "would average into a value neither measured; give each its own name, e.g. "
                    "SparsityMonitor(modules=[...], name='encoder') logs 'val/sparsity/encoder/mean'"
                )

    def _note_never_zero(self, watched: list[tuple[str, nn.Module]]) -> None:
        smooth = [f"{self._prefix}{name} ({type(m).__name__})" for name, m in watched if not can_output_exact_zeros(m)]
        if smooth and not self._noted_never_zero:
            self._noted_never_zero = True
            rank_zero_info(
                f"SparsityMonitor: {', '.join(smooth)} almost never output exactly 0, so their sparsity and dead "
                "fractions stay at or near 0 by construction (exact zeros come from rectifier units)"
            )

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, name: str, nonnegative: bool, per_call_site: bool):
        """The forward hook of watched module ``name``: counts its outputs in the current stage."""

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._stage is None or not self._in_step or self._in_backward:  # backward: a recomputation
                return
            if not isinstance(output, torch.Tensor):
                raise ConfigError(
                    f"SparsityMonitor: {name!r} ({type(module).__name__}) returned a "
                    f"{type(output).__name__}, not a tensor of (examples, units, ...); "
                    f"{_watch_inside(name, module)}"
                )
            call = self._calls.get(name, 0) if per_call_site else 0
            self._calls[name] = call + 1 if per_call_site else 1
            if self._padding and output.dim() > 0:  # the sampler's repeated examples end the batch
                if output.shape[0] <= self._padding:
                    return
                output = output[: output.shape[0] - self._padding]
            counters = self._counters[self._stage]
            key = (self._loader, name, call)
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = UnitCounter(self.unit_dim, nonnegative)
            counter.add(output)

        return hook

    def _new_pass(self, *args) -> None:
        """A new forward of the model or a new batch: call sites are numbered from 1 again."""
        for name, calls in self._calls.items():
            self._sites[name] = max(self._sites.get(name, 0), calls)
        self._calls.clear()

    def _new_batch(self, trainer: Trainer, stage: str, batch_idx: int, dataloader_idx: int | None = None) -> None:
        self._new_pass()
        self._in_step = True
        self._loader = dataloader_idx
        self._padding = padded_rows(_stage_dataloader(trainer, stage, dataloader_idx), batch_idx)

    # -- epoch boundaries -------------------------------------------------------------------------
    def _start(self, stage: str) -> None:
        self._new_pass()
        self._counters[stage] = {}
        self._stage = stage
        self._loader, self._padding = None, 0

    def _finish(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        self._new_pass()
        counters, self._counters[stage] = self._counters[stage], {}
        if not counters or not self.epoch_logs:
            return
        keys = list(counters)
        # One collective for every layer: per-unit counts, then the rows of each layer.
        flat = torch.cat(
            [counters[k].nonzero_counts() for k in keys]
            + [
                torch.tensor(
                    [float(counters[k].rows) for k in keys],
                    device=counters[keys[0]].nonzero_counts().device,
                    dtype=torch.float64,
                )
            ]
        )
        flat = trainer.strategy.reduce(flat, reduce_op="sum")
        rows = flat[-len(keys) :]
        values: dict[str, torch.Tensor] = {}
        rates: dict[str, torch.Tensor] = {}
        unit_counts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (non-zero per unit, rows)
        per_loader: dict[int | None, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}  # (sparsities, deads)
        offset = 0
        for i, key in enumerate(keys):
            units = counters[key].nonzero_counts().numel()
            nonzero = flat[offset : offset + units]
            offset += units
            loader, name, call = key
            suffix = _loader_suffix(loader)
            layer = self._site_name(name, call) + suffix
            rates[layer] = (nonzero / rows[i].clamp_min(1)).float().cpu()
            unit_counts[layer] = (nonzero, rows[i])
            sparsity, dead = activity_fractions(nonzero, rows[i])
            values[f"{stage}/sparsity/{layer}"], values[f"{stage}/dead/{layer}"] = sparsity, dead
            sparsities, deads = per_loader.setdefault(loader, ([], []))
            sparsities.append(sparsity)
            deads.append(dead)
        for loader, (sparsities, deads) in per_loader.items():
            values[f"{stage}/sparsity/{self._prefix}mean{_loader_suffix(loader)}"] = torch.stack(sparsities).mean()
            values[f"{stage}/dead/{self._prefix}mean{_loader_suffix(loader)}"] = torch.stack(deads).mean()
        self.firing_rates[stage] = rates
        # Already summed over ranks, so every rank holds the same values; sync_dist averages equals.
        # The names carry their dataloader suffix already.
        pl_module.log_dict(values, sync_dist=True, add_dataloader_idx=False)
        self._warn_dead_layers(stage, rates)
        if self.histograms and stage != "train":
            self._firing_rate_histograms(stage, trainer, unit_counts)

    def _firing_rate_histograms(
        self, stage: str, trainer: Trainer, unit_counts: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        """Keep, log (rank 0) and save (rank 0, with a logger) each layer's firing-rate histogram."""
        counts = {layer: (nonzero.cpu(), float(rows)) for layer, (nonzero, rows) in unit_counts.items()}
        histograms = {layer: firing_rate_histogram(nonzero, rows) for layer, (nonzero, rows) in counts.items()}
        self.firing_rate_histograms[stage] = histograms
        if not trainer.is_global_zero:
            return
        log_firing_rate_histograms(trainer.loggers, stage, histograms, counts, trainer.global_step)
        if self._log_dir is not None:
            save_firing_rates(
                Path(self._log_dir) / RATES_FILE,
                stage,
                histograms,
                counts,
                epoch=trainer.current_epoch,
                global_step=trainer.global_step,
                monitor=self.name or "",
            )

    def _site_name(self, name: str, call: int) -> str:
        """The reported name of call site ``call`` of module ``name``, after this monitor's name."""
        return self._prefix + (f"{name}@{call + 1}" if self._sites.get(name, 1) > 1 else name)

    def _warn_dead_layers(self, stage: str, rates: dict[str, torch.Tensor]) -> None:
        """Once per layer and stage: a layer whose units were all dead for a whole epoch passes
        no gradient, so the layers below it stop learning."""
        for layer, rate in rates.items():
            if (stage, layer) in self._warned_dead or bool(rate.any()):
                continue
            self._warned_dead.add((stage, layer))
            rank_zero_warn(
                f"SparsityMonitor: every unit of {layer} output exactly 0 for the whole {stage} epoch, so "
                "no gradient flows through it and the layers below stop learning; lower the learning rate or the "
                "l1 coefficient, or pre-train that layer for more epochs"
            )

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("train")

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._new_batch(trainer, "train", batch_idx)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._in_backward = True

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._in_backward = False

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self._in_backward = self._in_step = False
        every = self.train_log_every_n_steps
        counters = self._counters["train"]
        if not every or trainer.global_step % every or not counters:
            return
        running = {}
        for (_, name, call), counter in counters.items():
            layer = self._site_name(name, call)
            running[f"train_step/sparsity/{layer}"], running[f"train_step/dead/{layer}"] = activity_fractions(
                counter.nonzero_counts(), counter.rows
            )
        pl_module.log_dict(running, on_step=True, on_epoch=False)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("train", trainer, pl_module)
        self._stage = None

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            self._stage = None
        else:
            self._start("val")

    @override
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int | None = None
    ) -> None:
        # Lightning passes ``dataloader_idx`` only when there are several dataloaders.
        self._new_batch(trainer, "val", batch_idx, dataloader_idx)

    @override
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._in_step = False

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish("val", trainer, pl_module)
        # Validation inside fit (mid-epoch or at the epoch's end): training outputs count on.
        self._stage = "train" if trainer.state.fn == TrainerFn.FITTING else None
        self._loader, self._padding = None, 0

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test")

    @override
    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int | None = None
    ) -> None:
        self._new_batch(trainer, "test", batch_idx, dataloader_idx)

    @override
    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._in_step = False

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("test", trainer, pl_module)
        self._stage = None


class MonitorHook:
    """A hook a monitor registers on the model: calls ``fn``, eagerly under ``torch.compile`` (traced,
    the monitor's Python counters would be baked into the graph as constants and force a recompile at
    every step). A pickled or deep-copied model gets an ``InertHook`` in its place: ``fn`` (a closure
    over the monitor) need not pickle, and the copy's forwards are not counted as the watched model's."""

    def __init__(self, fn) -> None:
        self.fn = fn

    @torch.compiler.disable
    def __call__(self, *args):
        return self.fn(*args)

    def __reduce__(self):
        return InertHook, ()


class InertHook:
    """What a ``MonitorHook`` becomes in a pickled or copied model: a hook that does nothing. (Such
    pickles name this class by its import path, ``lightning_rect.callbacks.sparsity.InertHook``.)"""

    def __call__(self, *args) -> None:
        return None


class UnitCounter:
    """Non-zero outputs per unit of one watched call site, over the epoch so far.

    Counted as each output appears, while it is still in cache: ``|sign(h)|`` summed over every
    dimension but ``unit_dim`` (exact: each batch's sum is a small integer). For ``nonnegative``
    outputs (rectifier, softplus, sigmoid) ``sign(h)`` is already 0 or 1, so the ``abs`` is skipped.
    ``rows`` counts the outputs each unit produced (examples x positions).
    """

    def __init__(self, unit_dim: int = 1, nonnegative: bool = False) -> None:
        self.unit_dim = unit_dim
        self.nonnegative = nonnegative
        self.counts: torch.Tensor | None = None
        self.rows = 0

    def add(self, output: torch.Tensor) -> None:
        out = output.detach()
        if out.dim() < 2:
            raise ConfigError(
                f"SparsityMonitor: a watched module returned a {out.dim()}-d output of shape "
                f"{tuple(out.shape)}; watch modules whose outputs are (examples, units, ...)"
            )
        signs = out.sign() if self.nonnegative else out.sign().abs_()
        dim = self.unit_dim % out.dim()
        counts = signs.sum(0) if out.dim() == 2 and dim == 1 else signs.sum([d for d in range(out.dim()) if d != dim])
        if self.counts is None:
            self.counts = counts.double()
        else:
            self.counts.add_(counts)
        self.rows += out.numel() // out.shape[dim]

    def nonzero_counts(self) -> torch.Tensor:
        """``counts``, once the first ``add`` set them (a counter is made for an output and counts it at once)."""
        if self.counts is None:
            raise RuntimeError("SparsityMonitor: a unit counter was read before it counted any output")
        return self.counts


def is_nonnegative(module: nn.Module) -> bool:
    """Whether ``module``'s outputs are never negative, so counting needs no ``abs``."""
    return isinstance(module, NONNEGATIVE_TYPES) or output_range(module)[0] >= 0


def can_output_exact_zeros(module: nn.Module) -> bool:
    """False for activations whose outputs are exactly 0 only for an input of exactly 0, if ever."""
    declared = getattr(module, "exact_zeros", None)
    if isinstance(declared, bool):
        return declared
    return not isinstance(module, NEVER_ZERO_TYPES)


def user_named_modules(pl_module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``named_modules()`` under the user's names: a ``torch.compile``d submodule (an ``OptimizedModule``
    holding the module as ``_orig_mod``) is listed once, as the module itself under the name it has in
    the model, and its insides without the ``_orig_mod`` part."""
    named = []
    for name, module in pl_module.named_modules():
        if not name or isinstance(module, OptimizedModule):
            continue
        named.append((".".join(part for part in name.split(".") if part != "_orig_mod"), module))
    return named


def static_output_problem(module: nn.Module) -> str:
    """Why ``module`` cannot be watched, as far as it can be told without running it, or ""."""
    if isinstance(module, UNCALLED_TYPES):
        return "is a container that is never called itself (it has no forward)"
    try:
        declared = typing.get_type_hints(type(module).forward).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations say nothing either way
        return ""
    origin = typing.get_origin(declared) or declared
    if isinstance(origin, type) and issubclass(origin, (list, tuple, dict)):
        return f"is declared to return a {origin.__name__}"
    return ""


def _watch_inside(name: str, module: nn.Module) -> str:
    inside = [f"{name}.{n}" for n, m in module.named_modules() if n and isinstance(m, _activation_types())]
    if inside:
        return f"watch the activations inside it instead, e.g. modules={inside[:4]}"
    return "watch a module that returns one tensor (its hidden activation)"


def padded_rows(dataloader: object, batch_idx: int) -> int:
    """How many rows at the end of batch ``batch_idx`` repeat examples that the sampler already gave:
    a distributed sampler pads each process's share to the same length, and the padding is the last
    example of the share, so it sits at the end of the share's last batch."""
    sampler = getattr(dataloader, "sampler", None)
    batch_size = getattr(dataloader, "batch_size", None)
    if sampler is None or not isinstance(batch_size, int) or batch_size < 1:
        return 0
    padding = sampler_padding(sampler)
    if not padding or batch_idx != (len(sampler) - 1) // batch_size:
        return 0
    return padding


def sampler_padding(sampler: object) -> int:
    """How many of this process's indices a sampler repeats to even out the processes (the last ones).

    torch's ``DistributedSampler`` (and Lightning's wrapper of a custom sampler) appends copies of the
    first indices up to a multiple of the number of processes, then gives process ``r`` every
    ``num_replicas``-th index from ``r``: the copies are the last index of the highest-ranked shares.
    Other samplers can say it with a ``padding`` attribute (this process's repeated indices, at the end).
    """
    if isinstance(sampler, DistributedSampler):
        if sampler.drop_last:
            return 0
        last_position = sampler.total_size - sampler.num_replicas + sampler.rank
        # cast: torch types a sampler's dataset as a plain Dataset, but DistributedSampler takes its len() itself
        return int(last_position >= len(typing.cast(Sized, sampler.dataset)))
    padding = getattr(sampler, "padding", 0)
    return padding if isinstance(padding, int) and padding > 0 else 0


def _stage_dataloader(trainer: Trainer, stage: str, dataloader_idx: int | None) -> object:
    """The dataloader the current batch of ``stage`` comes from (None when it cannot be told)."""
    loaders = {
        "train": lambda: trainer.train_dataloader,
        "val": lambda: trainer.val_dataloaders,
        "test": lambda: trainer.test_dataloaders,
    }[stage]()
    if dataloader_idx is None:
        return loaders
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, Sequence) and dataloader_idx < len(loaders):
        return loaders[dataloader_idx]
    return None


def _loader_suffix(loader: int | None) -> str:
    """Lightning's suffix for values of one of several dataloaders; "" when there is one."""
    return "" if loader is None else f"/dataloader_idx_{loader}"


def _matches(entry: str, name: str, module: nn.Module) -> bool:
    """``entry`` is a module name, a class name, or an importable class path (``torch.nn.ReLU``)."""
    if entry == name or entry == type(module).__name__:
        return True
    cls = _import_class(entry)
    return cls is not None and isinstance(module, cls)


def _import_class(path: str) -> type | None:
    module_path, _, attr = path.rpartition(".")
    if not module_path or not attr[:1].isupper():  # "features.1" is a module name, not a class path
        return None
    try:
        obj = getattr(importlib.import_module(module_path), attr)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) else None


def _activation_types() -> tuple[type, ...]:
    registered = (ACTIVATIONS.get(n) for n in ACTIVATIONS.names())
    return ACTIVATION_TYPES + tuple(obj for obj in registered if isinstance(obj, type))
