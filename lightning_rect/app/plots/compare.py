"""Several runs in one figure (``plot A B ...``), each named by what differs in its ``config.yaml``.

The overlay has the summary's size (1200 x 800 pixels) and six panels, one colour per run:
training loss (``StackedDAE``: the reconstruction error of the layer in training); the selection
metric (validation error in %, RMSE, or reconstruction error summed over layers) with each run's selected
epoch starred; exact sparsity and dead units on the validation set, as means over layers, in %;
the firing-rate histogram of all hidden layers together (selected checkpoint on the test set, or
the last validation epoch; dead units as crosses left of 0); and the legend.

Legend labels (``run_labels``): the config keys whose values differ between the runs, by their
last name (``model.init_args.l1`` -> ``l1=0.001``; a longer name where two would collide; a class
by its place, ``model=StackedDAE``), at most ``MAX_KEYS`` of them, keys of the logger (its folder
and name) left out. Runs whose configs do not tell them apart, or that have no ``config.yaml``,
are named by their folders.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_rect.app.plots.run_folder import Run, load_run
from lightning_rect.app.plots.summary import epoch_axis, log_count_axis, new_figure, save_figure

COMPARISON_FILE = "comparison.png"
#: Config keys never used to tell runs apart: where the run was logged, not how it was trained.
IGNORED_PREFIXES = ("trainer.logger", "trainer.default_root_dir", "ckpt_path")
MAX_VALUE_CHARS = 40
#: At most this many differing settings in one label (then "… (+n)"), wrapped at this width.
MAX_KEYS = 4
LABEL_WIDTH = 48
SECTION_ORDER = {"model": 0, "data": 1, "optimizer": 2, "lr_scheduler": 3, "seed_everything": 4, "trainer": 5}


@dataclass
class Comparison:
    figure: Any
    #: the legend's labels, one per run, in the order the folders were given
    labels: list[str]


def save_comparison(folders: Sequence[str | Path], out: str | Path = COMPARISON_FILE) -> tuple[Path, Comparison]:
    comparison = draw_comparison(folders)
    return save_figure(comparison.figure, Path(out)), comparison


def draw_comparison(folders: Sequence[str | Path | Run]) -> Comparison:
    runs = [f if isinstance(f, Run) else load_run(f) for f in folders]
    labels = run_labels(runs)
    figure = new_figure()
    (loss, metric, legend_ax), (sparsity, dead, rates) = figure.subplots(2, 3)
    metric_key = next((r.selection_metric for r in runs if r.selection_metric), None)
    most = 1  # the largest count of units in one firing-rate bin
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        epochs, values = training_loss(run)
        loss.plot(epochs, values, color=color, marker="o", markersize=3, label=label)
        if metric_key:
            draw_metric(metric, run, metric_key, color)
        for ax, key in ((sparsity, "val/sparsity/mean"), (dead, "val/dead/mean")):
            epochs, values = run.curve(key)
            ax.plot(epochs, [100 * v for v in values], color=color, marker="o", markersize=3)
        most = max(most, draw_pooled_rates(rates, run, color))
    dae = any(r.pretrain_layers() and not r.has("train/loss") for r in runs)
    loss.set_title("Training loss" + (" (DAE: layer in training)" if dae else ""), fontsize=10)
    loss.set_ylabel("reconstruction error per example" if dae else "loss (NLL + L1, nats per example)")
    metric.set_title(f"Selection metric {metric_key or ''} (★ selected epoch)", fontsize=10)
    metric.set_ylabel(METRIC_LABELS.get(metric_key, metric_key) if metric_key else "")
    sparsity.set_title("Exact sparsity, mean over layers (validation)", fontsize=10)
    sparsity.set_ylabel("exact zeros (% of outputs)")
    dead.set_title("Dead units, mean over layers (validation)", fontsize=10)
    dead.set_ylabel("dead units (% of units)")
    for ax in (loss, metric, sparsity, dead):
        epoch_axis(ax)
    rates.set_title("Firing rates, all hidden layers (final)", fontsize=10)
    rates.set_xlabel("firing rate (fraction of examples, output ≠ 0)")
    rates.set_ylabel("units (log scale; × dead)")
    log_count_axis(rates, most)
    rates.set_ylim(bottom=0.7)
    rates.grid(alpha=0.3)
    legend_ax.axis("off")
    handles, _ = loss.get_legend_handles_labels()
    legend_ax.legend(
        handles, labels, loc="center", fontsize=9, title="runs (what differs in config.yaml)", title_fontsize=9
    )
    common = common_title(runs)
    figure.suptitle(f"{len(runs)} runs" + (f" of {common}" if common else ""), fontsize=11)
    return Comparison(figure, labels)


METRIC_LABELS = {
    "val/err": "validation error (%)",
    "val/rmse": "validation RMSE (stars)",
    "val/recon": "reconstruction error per example, summed over layers",
}


def training_loss(run: Run) -> tuple[list[int], list[float]]:
    if run.has("train/loss"):
        return run.curve("train/loss")
    merged: dict[int, float] = {}
    for k in run.pretrain_layers():  # each epoch trains one layer: its column holds that epoch's value
        merged.update(zip(*run.curve(f"train/pretrain/layer_{k}/recon")))
    return sorted(merged), [merged[e] for e in sorted(merged)]


def draw_metric(ax, run: Run, key: str, color: str) -> None:
    epochs, values = run.curve(key)
    scale = 100 if key == "val/err" else 1
    ax.plot(epochs, [scale * v for v in values], color=color, marker="o", markersize=3)
    best = run.best_epoch
    if best is not None and best in epochs:
        ax.plot(
            [best],
            [scale * values[epochs.index(best)]],
            marker="*",
            markersize=14,
            color=color,
            markeredgecolor="black",
            linestyle="none",
        )


def draw_pooled_rates(ax, run: Run, color: str) -> int:
    """The run's firing-rate histograms summed over layers, as a step line; returns its largest count."""
    final = run.final_rates()
    if final is None:
        return 0
    layers = list(final[1]["layers"].values())
    bins = len(layers[0]["histogram"])
    if any(len(layer["histogram"]) != bins for layer in layers):
        return 0
    counts = [sum(int(layer["histogram"][b]) for layer in layers) for b in range(bins)]
    dead = sum(int(layer.get("dead", 0)) for layer in layers)
    counts[0] -= dead
    ax.stairs(counts, [b / bins for b in range(bins + 1)], color=color, linewidth=1.5)  # 0: down to the axis
    if dead:
        ax.plot([-0.5 / bins], [dead], marker="x", markersize=9, markeredgewidth=2, color=color, linestyle="none")
    ax.set_xlim(-1.2 / bins, 1.0)
    return max(counts + [dead])


def common_title(runs: Sequence[Run]) -> str:
    titles = {r.title for r in runs if r.results}
    return titles.pop() if len(titles) == 1 else ""


# -- legend labels from config.yaml --------------------------------------------------------------
def run_labels(runs: Sequence[Run]) -> list[str]:
    """One label per run: ``key=value`` for every config key whose value differs between the runs."""
    folders = folder_labels([r.folder for r in runs])
    if len(runs) < 2 or any(r.config is None for r in runs):
        return folders
    flats = [flatten(r.config) for r in runs]
    keys = sorted(
        {k for flat in flats for k in flat}, key=lambda k: list(flats[0]).index(k) if k in flats[0] else 10**6
    )
    differing = [
        k
        for k in keys
        if not k.startswith(IGNORED_PREFIXES)
        and len({json.dumps(flat.get(k), sort_keys=True, default=str) for flat in flats}) > 1
    ]
    if not differing:
        return folders
    differing.sort(key=lambda k: SECTION_ORDER.get(k.split(".")[0], len(SECTION_ORDER)))  # model first
    names = short_names(differing)
    shown, more = differing[:MAX_KEYS], len(differing) - MAX_KEYS
    labels = [
        ", ".join(f"{names[k]}={format_value(flat.get(k), k)}" for k in shown) + (f", … (+{more})" if more > 0 else "")
        for flat in flats
    ]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({folder})" for label, folder in zip(labels, folders)]
    return [textwrap.fill(label, LABEL_WIDTH) for label in labels]


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists and scalars are values."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key (``init_args`` and ``class_path`` skipped: a class
    is named by its place, ``model=StackedDAE``) that no other key shares."""
    parts = {k: [p for p in k.split(".") if p not in ("init_args", "class_path")] for k in keys}
    names = {}
    for key, own in parts.items():
        for n in range(1, len(own) + 1):
            name = ".".join(own[-n:])
            if all(".".join(other[-n:]) != name for k, other in parts.items() if k != key):
                break
        names[key] = name
    return names


def format_value(value: Any, key: str = "") -> str:
    if key.endswith("class_path") and isinstance(value, str):
        text = value.rpartition(".")[2]  # lightning_rect.StackedDAE -> StackedDAE
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(format_value(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else "…" + text[-(MAX_VALUE_CHARS - 1) :]


def folder_labels(folders: Sequence[Path]) -> list[str]:
    """Each folder by the shortest trailing part of its path that tells it from the others."""
    resolved = [Path(os.path.abspath(f)) for f in folders]
    for n in range(2, max(len(p.parts) for p in resolved) + 1):
        labels = ["/".join(p.parts[-n:]) for p in resolved]
        if len(set(labels)) == len(labels):
            return labels
    return [str(f) for f in folders]
