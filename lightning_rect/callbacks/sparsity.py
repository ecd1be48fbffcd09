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
counted per call site: ``<name>@1``, ``<name>@2``, ... in call order.

How it stays cheap: a forward hook on each watched module adds the number of non-zero outputs of
each unit into a per-unit counter on the device (two or three small kernels per layer and step,
no host sync). At the end of an epoch the counters of every layer are summed over DDP ranks in one
``strategy.reduce`` call, so the logged values describe the whole data set. The per-unit firing
rates (fraction of examples on which each unit was non-zero) of the last finished epoch of each
stage stay in ``firing_rates[stage][layer]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_rect.activations import ACTIVATIONS
from lightning_rect.errors import ConfigError

#: Activation types listed as candidates when a model has no ``sparsity_modules()`` and no ``modules``.
ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Softplus, nn.Sigmoid, nn.LeakyReLU, nn.GELU)
#: torch modules whose outputs are never negative (lightning_rect's own say so with ``nonnegative``).
NONNEGATIVE_TYPES = (nn.ReLU, nn.ReLU6, nn.Softplus, nn.Sigmoid, nn.Hardsigmoid)
STAGES = ("train", "val", "test")


class SparsityMonitor(Callback):
    """Args:
        modules: which modules' outputs to measure, each a qualified module name (as in
            ``named_modules()``, e.g. ``features.1``) or a class name (``ReLU``, ``torch.nn.ReLU``).
            Default: the LightningModule's ``sparsity_modules()``. A model without that method must
            name its hidden activations (an output ``Sigmoid`` is not a hidden layer), and an entry
            that matches no module is an error.
        unit_dim: the dimension of a module's output that indexes its units (see above).
        train_log_every_n_steps: also log the epoch-to-date training values every n steps, as
            ``train_step/sparsity/<layer>`` and ``train_step/dead/<layer>`` (this process's data
            only; costs a host sync each time); ``None`` (default) logs training values per epoch.
        epoch_logs: log the per-epoch values. A second monitor added only for per-step logs (the
            ``callbacks/sparsity_steps.yaml`` preset) sets it to false so names are not logged twice.
    """

    def __init__(self, modules: Sequence[str] | None = None, unit_dim: int = 1,
                 train_log_every_n_steps: int | None = None, epoch_logs: bool = True) -> None:
        self.modules = list(modules) if modules is not None else None
        self.unit_dim = unit_dim
        self.train_log_every_n_steps = train_log_every_n_steps
        self.epoch_logs = epoch_logs
        #: stage -> layer name -> per-unit firing rate of the last finished epoch (CPU tensors)
        self.firing_rates: dict[str, dict[str, torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []
        self._stage: str | None = None  # the stage whose outputs the hooks count now, if any
        self._counters: dict[str, dict[tuple[str, int], UnitCounter]] = {stage: {} for stage in STAGES}
        self._calls: dict[str, int] = {}  # module name -> calls so far in the current batch
        self._sites: dict[str, int] = {}  # module name -> most calls seen in one batch
        self._warned_dead: set[tuple[str, str]] = set()

    # -- which modules ----------------------------------------------------------------------------
    def watched_modules(self, pl_module: LightningModule) -> list[tuple[str, nn.Module]]:
        """(logged name, module) of every module whose outputs are counted."""
        if self.modules is None:
            if hasattr(pl_module, "sparsity_modules"):
                return [(f"layer_{k}", m) for k, m in enumerate(pl_module.sparsity_modules(), start=1)]
            candidates = [name for name, m in pl_module.named_modules() if isinstance(m, _activation_types())]
            raise ConfigError(
                f"SparsityMonitor: {type(pl_module).__name__} has no sparsity_modules(), so say which hidden "
                f"activations to watch: SparsityMonitor(modules=[...]) with module names, e.g. {candidates[:-1] or candidates} "
                "(the last activation is often the output layer, not a hidden one)"
            )
        named = [(name, m) for name, m in pl_module.named_modules() if name]
        unmatched = [entry for entry in self.modules if not any(_matches(entry, n, m) for n, m in named)]
        if unmatched:
            raise ConfigError(
                f"SparsityMonitor: modules={self.modules}: {unmatched} match no module of {type(pl_module).__name__}; "
                f"use qualified names from named_modules() (e.g. {[n for n, m in named if isinstance(m, _activation_types())][:4]}) "
                "or class names such as ReLU"
            )
        return [(name, m) for name, m in named if any(_matches(entry, name, m) for entry in self.modules)]

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()
        for name, module in self.watched_modules(pl_module):
            self._handles.append(module.register_forward_hook(self._make_hook(name, is_nonnegative(module))))

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, name: str, nonnegative: bool):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._stage is None:
                return
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            counters = self._counters[self._stage]
            counter = counters.get((name, call))
            if counter is None:
                counter = counters[(name, call)] = UnitCounter(self.unit_dim, nonnegative)
            counter.add(output)

        # Under torch.compile the hook runs eagerly between graph pieces: traced, its Python counters
        # would be baked into the graph as constants and force a recompile at every step.
        return torch.compiler.disable(hook)

    def _new_batch(self) -> None:
        for name, calls in self._calls.items():
            self._sites[name] = max(self._sites.get(name, 0), calls)
        self._calls.clear()

    # -- epoch boundaries -------------------------------------------------------------------------
    def _start(self, stage: str) -> None:
        self._new_batch()
        self._counters[stage] = {}
        self._stage = stage

    def _finish(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        self._new_batch()
        counters, self._counters[stage] = self._counters[stage], {}
        if not counters or not self.epoch_logs:
            return
        keys = list(counters)
        # One collective for every layer: per-unit counts, then the rows of each layer.
        flat = torch.cat([counters[k].counts for k in keys]
                         + [torch.tensor([float(counters[k].rows) for k in keys], device=counters[keys[0]].counts.device,
                                         dtype=torch.float64)])
        flat = trainer.strategy.reduce(flat, reduce_op="sum")
        rows = flat[-len(keys):]
        values: dict[str, torch.Tensor] = {}
        rates: dict[str, torch.Tensor] = {}
        offset = 0
        for i, key in enumerate(keys):
            units = counters[key].counts.numel()
            nonzero = flat[offset:offset + units]
            offset += units
            layer = self._site_name(*key)
            rates[layer] = (nonzero / rows[i].clamp_min(1)).float().cpu()
            values[f"{stage}/sparsity/{layer}"] = (1.0 - nonzero.sum() / (rows[i] * units).clamp_min(1)).float()
            values[f"{stage}/dead/{layer}"] = (nonzero == 0).double().mean().float()
        values[f"{stage}/sparsity/mean"] = torch.stack([values[f"{stage}/sparsity/{self._site_name(*k)}"] for k in keys]).mean()
        values[f"{stage}/dead/mean"] = torch.stack([values[f"{stage}/dead/{self._site_name(*k)}"] for k in keys]).mean()
        self.firing_rates[stage] = rates
        # Already summed over ranks, so every rank holds the same values; sync_dist averages equals.
        pl_module.log_dict(values, sync_dist=True)
        self._warn_dead_layers(stage, rates)

    def _site_name(self, name: str, call: int) -> str:
        return f"{name}@{call + 1}" if self._sites.get(name, 1) > 1 else name

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
        self._new_batch()

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        every = self.train_log_every_n_steps
        counters = self._counters["train"]
        if not every or trainer.global_step % every or not counters:
            return
        running = {}
        for (name, call), counter in counters.items():
            nonzero, layer = counter.counts, self._site_name(name, call)
            running[f"train_step/sparsity/{layer}"] = (1.0 - nonzero.sum() / max(counter.rows * nonzero.numel(), 1)).float()
            running[f"train_step/dead/{layer}"] = (nonzero == 0).double().mean().float()
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
    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._new_batch()

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish("val", trainer, pl_module)
        # Validation inside fit (mid-epoch or at the epoch's end): training outputs count on.
        self._stage = "train" if trainer.state.fn == TrainerFn.FITTING else None

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test")

    @override
    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._new_batch()

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("test", trainer, pl_module)
        self._stage = None


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
            raise ConfigError(f"SparsityMonitor: a watched module returned a {out.dim()}-d output of shape "
                              f"{tuple(out.shape)}; watch modules whose outputs are (examples, units, ...)")
        signs = out.sign() if self.nonnegative else out.sign().abs_()
        dim = self.unit_dim % out.dim()
        counts = signs.sum(0) if out.dim() == 2 and dim == 1 else signs.sum([d for d in range(out.dim()) if d != dim])
        if self.counts is None:
            self.counts = counts.double()
        else:
            self.counts.add_(counts)
        self.rows += out.numel() // out.shape[dim]


def is_nonnegative(module: nn.Module) -> bool:
    """Whether ``module``'s outputs are never negative, so counting needs no ``abs``."""
    return isinstance(module, NONNEGATIVE_TYPES) or getattr(module, "nonnegative", False) is True


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
