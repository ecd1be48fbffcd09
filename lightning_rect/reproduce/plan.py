"""How one run of a reproduction is specified: the ``Cell`` it competes for, its settings, its id.

A plan is computed before anything trains, so the number of runs is known up front (progress,
``--dry-run``, ``--shard``), and every run has a stable id derived from its settings: a rerun finds
the runs that already finished. Fine-tuning from pre-training names its pre-training runs in
``needs``; the one with the best validation score among them (one per learning rate) is used,
which is decided when they have finished.

The settings of a run are config overrides (``"model.init_args.activation": "tanh"``). Only those
go into the id; where the data lie (``--data-dir``), where logs go and which checkpoint a
fine-tuning run starts from are filled in by the runner. Whether a finished run may be reused also
depends on its data files, config file and package version (``inputs``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_rect.reproduce.budgets import DATASETS, L1_ACTIVATIONS, Budget, for_dataset


@dataclass(frozen=True)
class Cell:
    """The result a run competes for in a table or figure: runs with equal cells differ only in
    learning rate, and the one with the best validation score is the cell's result.

    Args:
        dataset: a name of ``budgets.DATASETS``.
        activation: the hidden units' (``sharp_softplus`` with ``a``).
        phase: ``finetune`` (a classifier, a number in a table) or ``pretrain`` (a stacked DAE
            whose best checkpoint the fine-tuning runs of the same activation start from).
        pretrained: a fine-tuning run that starts from pre-training.
        l1, a, fraction: the L1 coefficient, the softplus sharpness (``math.inf``: the rectifier)
            and the labeled fraction, in the experiments that vary them; None elsewhere.
        sign_flip: the paper's symmetry trick on (``protocol`` compares it with off).
        variant: a named protocol variant (``pretraining`` compares several); None elsewhere.
        seed: ``seed_everything`` of a repeat with another seed (a cell of its own, so repeats are
            averaged, never chosen among); None: the config's seed.
    """

    dataset: str
    activation: str
    phase: str = "finetune"
    pretrained: bool = False
    l1: float | None = None
    a: float | None = None
    fraction: float | None = None
    sign_flip: bool = False
    variant: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class RunSpec:
    """One ``python -m lightning_rect fit`` run.

    Args:
        id: stable name, also the run's folder under ``<out>/runs/``.
        cell: what the run is for (data set, phase, activation, the varied setting).
        config: file name in ``configs/``.
        settings: config overrides, dotted keys (what makes the run what it is).
        lr: its learning rate (the config's when the budget does not search).
        needs: ids of the pre-training runs to start from (the best of them on validation).
    """

    id: str
    cell: Cell
    config: str
    settings: dict[str, Any]
    lr: float | None
    needs: tuple[str, ...] = ()

    @property
    def dataset(self) -> str:
        return self.cell.dataset

    @property
    def phase(self) -> str:
        return self.cell.phase

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset,
            "phase": self.phase,
            "config": self.config,
            "settings": self.settings,
            "lr": self.lr,
            "cell": asdict(self.cell),
            "needs": list(self.needs),
        }


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

    @property
    def lrs(self) -> tuple[float | None, ...]:
        """The learning rates every cell tries; (None,): the config's."""
        return self.budget.lrs or (None,)

    @property
    def pretrain_lrs(self) -> tuple[float | None, ...]:
        """The learning rates of the pre-training runs: the budget's ``pretrain_lrs``, else ``lrs``."""
        return self.budget.pretrain_lrs or self.lrs

    def lrs_for(self, dataset: str, phase: str = "finetune") -> tuple[float | None, ...]:
        """The rates of one phase on one data set: the budget's narrowed ones (``phase_lrs``) if any."""
        narrowed = (self.budget.phase_lrs.get(dataset) or {}).get(phase)
        return tuple(narrowed) if narrowed else (self.pretrain_lrs if phase == "pretrain" else self.lrs)


def run_id(readable: Iterable[str], config: str, settings: dict, needs: Iterable[str]) -> str:
    """``<readable parts>-<8 hex digits>``: the hash covers everything that defines the run."""
    canonical = json.dumps({"config": config, "settings": settings, "needs": sorted(needs)}, sort_keys=True)
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    return "-".join([*readable, digest])


def num(value: float | None) -> str:
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
    """The activation, and l1 = 0 for those the L1 penalty is not meant for (``L1_ACTIVATIONS``)."""
    settings: dict[str, Any] = {"model.init_args.activation": activation}
    if activation_args:
        settings["model.init_args.activation_args"] = dict(activation_args)
    if activation not in L1_ACTIVATIONS:
        settings["model.init_args.l1"] = 0.0
    return settings


def pretrain_run(
    ctx: Context,
    dataset: str,
    activation: str,
    lr: float | None,
    *,
    extra: dict[str, Any] | None = None,
    tag: str = "",
    cell: Cell | None = None,
) -> RunSpec:
    """Greedy layer-wise DAE pre-training on all training inputs (``<dataset>_pretrain.yaml``)."""
    facts = DATASETS[dataset]
    config = facts.pretrain_config
    settings = _common_settings(ctx, dataset, for_dataset(ctx.budget.pretrain_data, dataset, {}) or {})
    settings.update(_activation_settings(activation, None))
    settings.update(extra or {})
    settings["model.init_args.reconstruction"] = facts.reconstruction_for(activation)
    per_layer = for_dataset(ctx.budget.pretrain_epochs_per_layer, dataset)
    if per_layer is not None:
        hidden = settings.get("model.init_args.hidden_sizes") or ctx.config_value(
            config, "model.init_args.hidden_sizes"
        )
        if not hidden:
            raise ValueError(f"{config} sets no model.init_args.hidden_sizes; cannot work out trainer.max_epochs")
        settings["model.init_args.epochs_per_layer"] = per_layer
        settings["trainer.max_epochs"] = per_layer * len(hidden)
    if lr is not None:
        settings["model.init_args.lr"] = lr
    lr_used = lr if lr is not None else ctx.config_value(config, "model.init_args.lr")
    readable = [dataset, "pretrain", activation, *([tag] if tag else []), f"lr{num(lr_used)}"]
    ident = run_id(readable, config, settings, ())
    return RunSpec(ident, cell or Cell(dataset, activation, phase="pretrain"), config, settings, lr_used)


def finetune_run(
    ctx: Context,
    cell: Cell,
    lr: float | None,
    *,
    needs: tuple[str, ...] = (),
    activation_args: dict | None = None,
    config: str | None = None,
    extra: dict[str, Any] | None = None,
    epochs: int | None = None,
    tag: str = "",
) -> RunSpec:
    """Supervised training of ``SparseMLP``, from random weights or (``needs``) from pre-training."""
    dataset = cell.dataset
    config = config or DATASETS[dataset].config
    settings = _common_settings(ctx, dataset, for_dataset(ctx.budget.data, dataset, {}) or {})
    settings.update(_activation_settings(cell.activation, activation_args))
    max_epochs = epochs if epochs is not None else for_dataset(ctx.budget.finetune_epochs, dataset)
    if max_epochs is not None:
        settings["trainer.max_epochs"] = max_epochs
    if lr is not None:
        settings["model.init_args.lr"] = lr
    settings.update(extra or {})
    lr_used = lr if lr is not None else ctx.config_value(config, "model.init_args.lr")
    readable = [dataset, cell.activation, "pre" if needs else "nopre", *([tag] if tag else []), f"lr{num(lr_used)}"]
    ident = run_id(readable, config, settings, needs)
    return RunSpec(ident, cell, config, settings, lr_used, needs=needs)


EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"


def early_stopping(ctx: Context, config: str, patience: int) -> dict[str, Any]:
    """Settings that stop fine-tuning after ``patience`` epochs without a better val/err: none when
    the config already does so (Lightning refuses two alike ``EarlyStopping`` callbacks), an added
    callback when it has none; a config that stops early otherwise is an error, not a silent change."""
    callbacks = ctx.config_value(config, "trainer.callbacks") or []
    configured = [
        c for c in callbacks if isinstance(c, dict) and c.get("class_path") in (EARLY_STOPPING, "EarlyStopping")
    ]
    wanted = {"monitor": "val/err", "mode": "min", "patience": patience}
    if not configured:
        return {"trainer.callbacks+": {"class_path": EARLY_STOPPING, "init_args": wanted}}
    args = configured[0].get("init_args") or {}
    if {key: args.get(key) for key in wanted} != wanted:
        raise ValueError(f"configs/{config} stops early with {args}, this experiment with {wanted}: make them agree")
    return {}


def finetune_epochs(ctx: Context, dataset: str, config: str) -> int | None:
    """Fine-tuning epochs of the budget, or the config's ``trainer.max_epochs``."""
    epochs = for_dataset(ctx.budget.finetune_epochs, dataset)
    return epochs if epochs is not None else ctx.config_value(config, "trainer.max_epochs")
