"""The paper's experiments as static lists of runs (``RunSpec``), one ``fit`` each.

A plan is computed before anything trains, so the number of runs is known up front (progress,
``--dry-run``, ``--shard``), and every run has a stable id derived from its settings: a rerun finds
the runs that already finished. Fine-tuning from pre-training names its pre-training runs in
``needs``; the one with the best validation score among them (one per learning rate) is used,
which is decided when they have finished.

The settings of a run are config overrides (``"model.init_args.activation": "tanh"``). Only those
go into the id; where the data lie (``--data-dir``), where logs go and which checkpoint a
fine-tuning run starts from are filled in by the runner and do not change the id.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_rect.reproduce.budgets import DATASETS, Budget, for_dataset

#: Table 1's activations, in the paper's order.
TABLE1_ACTIVATIONS = ("rectifier", "tanh", "softplus")
SEMI_ACTIVATIONS = ("rectifier", "tanh")


@dataclass
class RunSpec:
    """One ``python -m lightning_rect fit`` run.

    Args:
        id: stable name, also the run's folder under ``<out>/runs/``.
        dataset, phase: data set name; ``pretrain`` (StackedDAE) or ``finetune`` (SparseMLP).
        config: file name in ``configs/``.
        settings: config overrides, dotted keys (what makes the run what it is).
        labels: what the reports show (activation, pretrained, lr, l1, a, fraction).
        cell: the result this run competes for; runs sharing a cell differ only in learning rate
            and the one with the best validation score is the cell's result.
        needs: ids of the pre-training runs to start from (the best of them on validation).
    """

    id: str
    dataset: str
    phase: str
    config: str
    settings: dict[str, Any]
    labels: dict[str, Any]
    cell: str
    needs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "dataset": self.dataset, "phase": self.phase, "config": self.config,
                "settings": self.settings, "labels": self.labels, "cell": self.cell, "needs": list(self.needs)}


@dataclass
class Context:
    """What planning needs: the budget and where the configs are (read for layer counts, epochs, lr)."""

    budget: Budget
    configs_dir: Path
    _cache: dict[str, dict] = field(default_factory=dict)

    def config(self, name: str) -> dict:
        if name not in self._cache:
            path = self.configs_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"config {path} not found; pass --configs DIR (the folder holding {name})")
            self._cache[name] = yaml.safe_load(path.read_text()) or {}
        return self._cache[name]

    def config_value(self, name: str, dotted: str, default: Any = None) -> Any:
        node: Any = self.config(name)
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node


def run_id(readable: Iterable[str], config: str, settings: dict, needs: Iterable[str]) -> str:
    """``<readable parts>-<8 hex digits>``: the hash covers everything that defines the run."""
    canonical = json.dumps({"config": config, "settings": settings, "needs": sorted(needs)}, sort_keys=True)
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    return "-".join([*readable, digest])


def _num(value: float | None) -> str:
    """Compact, path-safe number: 0.001 -> 0.001, 1e-05 -> 1e-05, inf -> inf; None -> cfg."""
    return "cfg" if value is None else f"{value:g}"


# -- the two kinds of run ---------------------------------------------------------------------------
def _common_settings(ctx: Context, dataset: str, data_extra: dict) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    hidden = for_dataset(ctx.budget.hidden_sizes, dataset)
    if hidden is not None:
        settings["model.init_args.hidden_sizes"] = list(hidden)
    for key, value in sorted((for_dataset(ctx.budget.trainer, dataset, {}) or {}).items()):
        settings[f"trainer.{key}"] = value
    for key, value in sorted(data_extra.items()):
        settings[f"data.init_args.{key}"] = value
    return settings


def _activation_settings(activation: str, activation_args: dict | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"model.init_args.activation": activation}
    if activation_args:
        settings["model.init_args.activation_args"] = dict(activation_args)
    return settings


def pretrain_run(ctx: Context, dataset: str, activation: str, lr: float | None) -> RunSpec:
    """Greedy layer-wise DAE pre-training on all training inputs (``<dataset>_pretrain.yaml``)."""
    facts = DATASETS[dataset]
    config = facts.pretrain_config
    settings = _common_settings(ctx, dataset, for_dataset(ctx.budget.pretrain_data, dataset, {}) or {})
    settings.update(_activation_settings(activation, None))
    reconstruction = facts.reconstruction.get(activation, facts.reconstruction.get("*"))
    settings["model.init_args.reconstruction"] = reconstruction
    per_layer = for_dataset(ctx.budget.pretrain_epochs_per_layer, dataset)
    if per_layer is not None:
        hidden = settings.get("model.init_args.hidden_sizes") or ctx.config_value(config, "model.init_args.hidden_sizes")
        if not hidden:
            raise ValueError(f"{config} sets no model.init_args.hidden_sizes; cannot work out trainer.max_epochs")
        settings["model.init_args.epochs_per_layer"] = per_layer
        settings["trainer.max_epochs"] = per_layer * len(hidden)
    if lr is not None:
        settings["model.init_args.lr"] = lr
    lr_label = lr if lr is not None else ctx.config_value(config, "model.init_args.lr")
    labels = {"activation": activation, "pretrained": None, "lr": lr_label, "reconstruction": reconstruction}
    ident = run_id([dataset, "pretrain", activation, f"lr{_num(lr_label)}"], config, settings, ())
    return RunSpec(ident, dataset, "pretrain", config, settings, labels, cell=f"{dataset}/pretrain/{activation}")


def finetune_run(ctx: Context, dataset: str, activation: str, lr: float | None, *, cell: str,
                 needs: tuple[str, ...] = (), activation_args: dict | None = None, config: str | None = None,
                 extra: dict[str, Any] | None = None, epochs: int | None = None,
                 labels: dict[str, Any] | None = None, tag: str = "") -> RunSpec:
    """Supervised training of ``SparseMLP``, from random weights or (``needs``) from pre-training."""
    config = config or DATASETS[dataset].config
    settings = _common_settings(ctx, dataset, for_dataset(ctx.budget.data, dataset, {}) or {})
    settings.update(_activation_settings(activation, activation_args))
    max_epochs = epochs if epochs is not None else for_dataset(ctx.budget.finetune_epochs, dataset)
    if max_epochs is not None:
        settings["trainer.max_epochs"] = max_epochs
    if lr is not None:
        settings["model.init_args.lr"] = lr
    settings.update(extra or {})
    lr_label = lr if lr is not None else ctx.config_value(config, "model.init_args.lr")
    all_labels = {"activation": activation, "pretrained": bool(needs), "lr": lr_label, **(labels or {})}
    readable = [dataset, activation, "pre" if needs else "nopre", *([tag] if tag else []), f"lr{_num(lr_label)}"]
    ident = run_id(readable, config, settings, needs)
    return RunSpec(ident, dataset, "finetune", config, settings, all_labels, cell=cell, needs=needs)


def finetune_epochs(ctx: Context, dataset: str, config: str) -> int | None:
    """Fine-tuning epochs of the budget, or the config's ``trainer.max_epochs``."""
    epochs = for_dataset(ctx.budget.finetune_epochs, dataset)
    return epochs if epochs is not None else ctx.config_value(config, "trainer.max_epochs")


def _lrs(ctx: Context) -> tuple[float | None, ...]:
    return ctx.budget.lrs or (None,)


# -- the experiments --------------------------------------------------------------------------------
def plan_table1(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    """Rectifier / tanh / softplus, each with and without pre-training (Table 1)."""
    runs: list[RunSpec] = []
    for dataset in datasets:
        for activation in TABLE1_ACTIVATIONS:
            pre = [pretrain_run(ctx, dataset, activation, lr) for lr in _lrs(ctx)]
            needs = tuple(r.id for r in pre)
            runs += pre
            runs += [finetune_run(ctx, dataset, activation, lr, needs=needs, cell=f"{dataset}/{activation}/pretrained")
                     for lr in _lrs(ctx)]
            runs += [finetune_run(ctx, dataset, activation, lr, cell=f"{dataset}/{activation}/none")
                     for lr in _lrs(ctx)]
    return runs


def plan_l1_sweep(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    """Rectifier networks without pre-training, one per L1 coefficient (the paper's figure on MNIST)."""
    runs = []
    for dataset in datasets:
        for l1 in ctx.budget.l1_grid:
            runs += [finetune_run(ctx, dataset, "rectifier", lr, cell=f"{dataset}/l1={_num(l1)}",
                                  extra={"model.init_args.l1": l1}, labels={"l1": l1}, tag=f"l1{_num(l1)}")
                     for lr in _lrs(ctx)]
    return runs


def plan_sharpness(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    """(1/a) softplus(a x) for the budget's values of a, and the rectifier (a = inf); no pre-training."""
    runs = []
    for dataset in datasets:
        for a in ctx.budget.sharpness:
            activation, args = ("rectifier", None) if math.isinf(a) else ("sharp_softplus", {"a": a})
            runs += [finetune_run(ctx, dataset, activation, lr, activation_args=args, cell=f"{dataset}/a={_num(a)}",
                                  labels={"a": a}, tag="" if math.isinf(a) else f"a{_num(a)}")
                     for lr in _lrs(ctx)]
    return runs


def plan_semi_supervised(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    """Fine-tuning on a labeled fraction, with pre-training on every training input or without."""
    runs = []
    for dataset in datasets:
        facts = DATASETS[dataset]
        base_epochs = finetune_epochs(ctx, dataset, facts.semi_config)
        for activation in SEMI_ACTIVATIONS:
            pre = [pretrain_run(ctx, dataset, activation, lr) for lr in _lrs(ctx)]
            runs += pre
            for fraction in ctx.budget.fractions:
                epochs = None
                if base_epochs is not None and not facts.stream:
                    epochs = min(math.ceil(base_epochs / fraction), ctx.budget.semi_epoch_cap * base_epochs)
                for needs in (tuple(r.id for r in pre), ()):
                    kind = "pretrained" if needs else "none"
                    runs += [finetune_run(ctx, dataset, activation, lr, needs=needs, config=facts.semi_config,
                                          cell=f"{dataset}/{activation}/{kind}/f={_num(fraction)}",
                                          extra={"data.init_args.labeled_fraction": fraction}, epochs=epochs,
                                          labels={"fraction": fraction}, tag=f"f{_num(fraction)}")
                             for lr in _lrs(ctx)]
    return runs


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    default_datasets: tuple[str, ...]
    plan: Callable[[Context, list[str]], list[RunSpec]]
    has_figure: bool


EXPERIMENTS: dict[str, Experiment] = {
    "table1": Experiment("table1", "Table 1: test error of depth-3 networks, with and without pre-training",
                         ("mnist",), plan_table1, has_figure=False),
    "l1_sweep": Experiment("l1_sweep", "L1 penalty sweep: test error and exact sparsity against the coefficient",
                           ("mnist",), plan_l1_sweep, has_figure=True),
    "sharpness": Experiment("sharpness", "Softplus sharpness: test error against a in (1/a) softplus(a x)",
                            ("norb",), plan_sharpness, has_figure=True),
    "semi_supervised": Experiment("semi_supervised", "Semi-supervised: test error against the labeled fraction",
                                  ("norb",), plan_semi_supervised, has_figure=True),
}
