"""``summary.png``: one run at a glance, drawn from its folder's files (``run_folder.py``).

Every figure is ``FIGSIZE`` inches at ``DPI`` dots per inch: **1200 x 800 pixels** (width x
height), whatever the number of layers. Panels:

- top left, **learning curves**: training and validation loss (NLL + L1, nats per example, left
  axis) and validation error in % (right axis; RMSE in stars for ``StarRatingMLP``). For a
  ``StackedDAE``: the **reconstruction error of each layer across the greedy phases** (training
  dashed, validation solid), each phase shaded and named by the layer it trains;
- top middle, **exact sparsity per layer** across epochs: % of the layer's outputs exactly 0 on
  the validation set (training set if there is no validation);
- top right, **dead units per layer** across epochs: % of the layer's units that were 0 on every
  validation example;
- bottom row, **firing-rate histogram per layer** (up to ``MAX_HISTOGRAMS``): how many units fire
  on what fraction of the examples, on a log scale, for the selected checkpoint on the test set
  (the last validation epoch when the run has no test, and for a ``StackedDAE``, whose test runs
  lower layers once per evaluated layer: see ``Run.final_rates``); dead units are a separate red
  bar left of 0, with their number.

The selected epoch (``best_epoch`` of ``results.json``, the checkpoint that was tested) is a dashed
vertical line in the top panels. matplotlib is optional (``pip install 'lightning-rect[plot]'``):
without it ``write_summary_figure`` prints one line and returns.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning_rect.app.plots.run_folder import Run, load_run, natural_key
from lightning_rect.errors import LightningRectError
from lightning_rect.files import atomic_write

#: Figure size in inches and resolution: 12 x 8 in at 100 dpi = 1200 x 800 pixels.
FIGSIZE = (12.0, 8.0)
DPI = 100
SUMMARY_FILE = "summary.png"
#: At most this many firing-rate histograms in the bottom row (the rest are named in the figure).
MAX_HISTOGRAMS = 6
PLOT_HINT = "pip install 'lightning-rect[plot]'  (or: pip install matplotlib)"
SELECTED_STYLE = {"color": "0.35", "linestyle": "--", "linewidth": 1.0}


class MatplotlibMissing(LightningRectError, ImportError):
    """matplotlib is not installed."""


def new_figure(figsize: tuple[float, float] = FIGSIZE):
    """A matplotlib ``Figure`` without pyplot (no GUI backend, no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MatplotlibMissing(f"matplotlib is not installed; install it with: {PLOT_HINT}") from err
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def save_figure(figure, path: Path) -> Path:
    """Save at ``DPI`` (so ``FIGSIZE`` gives the documented pixel size), atomically."""
    with atomic_write(path) as file:
        figure.savefig(file, format=path.suffix.lstrip(".") or "png", dpi=DPI)
    return path


def write_summary_figure(run_dir: str | Path) -> Path | None:
    """What ``fit`` calls on rank 0 after writing ``results.json``: draws ``summary.png`` beside
    it. Never raises: without matplotlib it prints one line saying so, and a figure that cannot be
    drawn is reported in one line; the run's other files are already written either way."""
    try:
        path = save_summary(run_dir)
    except MatplotlibMissing:
        print(
            f"matplotlib is not installed, so {SUMMARY_FILE} was not drawn (results.json is written); "
            f"install it with: {PLOT_HINT}"
        )
        return None
    except Exception as err:  # a figure must never cost a finished run its exit status
        print(f"{SUMMARY_FILE} was not drawn ({type(err).__name__}: {err}); results.json is written", file=sys.stderr)
        return None
    print(f"  figure: {path}")
    return path


def save_summary(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the summary of ``run_dir`` into ``out`` (default: ``summary.png`` in the run folder)."""
    run = load_run(run_dir)
    figure = draw_summary(run)
    return save_figure(figure, Path(out) if out is not None else run.folder / SUMMARY_FILE)


def draw_summary(run: Run | str | Path):
    """The summary ``Figure`` of a run (a ``Run`` or its folder)."""
    run = run if isinstance(run, Run) else load_run(run)
    figure = new_figure()
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.0, 0.9])
    curves, sparsity, dead = top.subplots(1, 3)
    if run.pretrain_layers():
        draw_reconstruction(curves, run)
    else:
        draw_learning_curves(curves, run)
    stage = "val" if run.layers("val") else "train"
    draw_per_layer(
        sparsity,
        run,
        stage,
        "sparsity",
        f"Exact sparsity per layer ({STAGE_NAMES[stage]})",
        "exact zeros (% of the layer's outputs)",
    )
    draw_per_layer(
        dead,
        run,
        stage,
        "dead",
        f"Dead units per layer ({STAGE_NAMES[stage]})",
        f"dead units (% of units, 0 on every {STAGE_NAMES[stage]} example)",
    )
    draw_histogram_row(bottom, run)
    figure.suptitle(summary_title(run), fontsize=11)
    return figure


STAGE_NAMES = {"train": "training", "val": "validation", "test": "test"}


def summary_title(run: Run) -> str:
    parts = [run.title]
    results = run.results
    for key, name, scale, unit in (
        ("test/err", "test error", 100, "%"),
        ("test/rmse", "test RMSE", 1, ""),
        ("test/recon", "test reconstruction error", 1, ""),
        ("test/sparsity/mean", "test sparsity", 100, "%"),
    ):
        value = results.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{name} {scale * value:.{2 if unit else 3}f}{unit}")
    if run.best_epoch is not None:
        epochs = results.get("epochs")
        parts.append(
            f"selected epoch {run.best_epoch}" + (f" of 0-{epochs - 1}" if isinstance(epochs, int) and epochs else "")
        )
    return " · ".join(parts) + f"\n{run.folder}"


def mark_selected_epoch(ax, run: Run) -> None:
    if run.best_epoch is not None:
        ax.axvline(run.best_epoch, label=f"selected epoch {run.best_epoch}", **SELECTED_STYLE)


def epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch (from 0)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def log_count_axis(ax, most: int = 1000) -> None:
    """Counts of units on a log y axis, labelled 1, 10, 100 (1, 2, 5, 10, ... below 100 units),
    not 10^0, 2x10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if most < 100 else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def empty_panel(ax, title: str, text: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_learning_curves(ax, run: Run) -> None:
    title = "Learning curves"
    lines = []
    for key, label, color in (("train/loss", "training loss", "C0"), ("val/loss", "validation loss", "C1")):
        if run.has(key):
            lines += ax.plot(*run.curve(key), color=color, marker="o", markersize=3, label=label)
    metric = next((k for k in ("val/err", "val/rmse") if run.has(k)), None)
    if not lines and metric is None:
        empty_panel(ax, title, "no training or validation loss in metrics.csv")
        return
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("loss (NLL + L1, nats per example)")
    epoch_axis(ax)
    if metric is not None:
        twin = ax.twinx()
        epochs, values = run.curve(metric)
        if metric == "val/err":
            values, label, ylabel = [100 * v for v in values], "validation error", "validation error (%)"
        else:
            label, ylabel = "validation RMSE", "validation RMSE (stars)"
        lines += twin.plot(epochs, values, color="C3", marker="s", markersize=3, label=label)
        twin.set_ylabel(ylabel, color="C3")
        twin.tick_params(axis="y", colors="C3")
    if run.best_epoch is not None:
        lines.append(ax.axvline(run.best_epoch, label=f"selected epoch {run.best_epoch}", **SELECTED_STYLE))
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper right")


def draw_reconstruction(ax, run: Run) -> None:
    """StackedDAE: each layer's reconstruction error across epochs, phases shaded."""
    ax.set_title("Greedy pre-training: reconstruction error per layer", fontsize=10)
    for k in run.pretrain_layers():
        color = f"C{(k - 1) % 10}"
        phase: list[int] = []
        for stage, style in (("train", "--"), ("val", "-")):
            epochs, values = run.curve(f"{stage}/pretrain/layer_{k}/recon")
            phase += epochs
            if epochs:
                ax.plot(
                    epochs,
                    values,
                    style,
                    color=color,
                    marker="o",
                    markersize=3,
                    label=f"layer {k}, {STAGE_NAMES[stage]}",
                )
        if phase:
            start, end = min(phase) - 0.5, max(phase) + 0.5
            ax.axvspan(start, end, color=color, alpha=0.07, linewidth=0)
            ax.text(
                (start + end) / 2,
                0.98,
                f"phase {k}:\ntrains layer {k}",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=7,
                color=color,
            )
    mark_selected_epoch(ax, run)
    ax.set_ylabel("reconstruction error (summed over inputs, per example)")
    epoch_axis(ax)
    ax.legend(fontsize=7, loc="best")


def draw_per_layer(ax, run: Run, stage: str, what: str, title: str, ylabel: str) -> None:
    layers = run.layers(stage)
    if not layers:
        empty_panel(ax, title, f"no {stage}/{what}/<layer> columns in metrics.csv\n(no SparsityMonitor in this run)")
        return
    for i, layer in enumerate(layers):
        epochs, values = run.curve(f"{stage}/{what}/{layer}")
        ax.plot(epochs, [100 * v for v in values], color=f"C{i % 10}", marker="o", markersize=3, label=layer)
    if len(layers) > 1 and run.has(f"{stage}/{what}/mean"):
        epochs, values = run.curve(f"{stage}/{what}/mean")
        ax.plot(epochs, [100 * v for v in values], color="black", linewidth=2, alpha=0.6, label="mean over layers")
    mark_selected_epoch(ax, run)
    if what == "dead":  # from 0: a flat 6% must not look like a swing
        ax.set_ylim(0, max(ax.get_ylim()[1], 1.0))
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    epoch_axis(ax)
    ax.legend(fontsize=7)


def draw_histogram_row(subfigure, run: Run) -> None:
    final = run.final_rates()
    if final is None:
        subfigure.suptitle("Firing rates per layer", fontsize=10)
        empty_panel(
            subfigure.subplots(),
            "",
            "no firing_rates.json in this run folder (a run from before the SparsityMonitor saved firing "
            "rates, or one with histograms=False)",
        )
        return
    stage, entry = final
    assert run.rates is not None  # final_rates found them
    layers: dict[str, Any] = entry["layers"]
    names = sorted(layers, key=natural_key)
    shown, left_out = names[:MAX_HISTOGRAMS], names[MAX_HISTOGRAMS:]
    bins = int(run.rates.get("bins") or len(layers[names[0]]["histogram"]))
    where = (
        "the selected checkpoint on the test set"
        if stage == "test"
        else f"the validation set at epoch {entry.get('epoch')}"
    )
    subfigure.suptitle(
        f"Firing rates per layer: {where}" + (f" (not shown: {', '.join(left_out)})" if left_out else ""), fontsize=10
    )
    axes = subfigure.subplots(1, len(shown), squeeze=False)[0]
    for i, (ax, name) in enumerate(zip(axes, shown)):
        draw_histogram(ax, name, layers[name], bins, ylabel=i == 0)


def draw_histogram(ax, layer: str, data: dict[str, Any], bins: int, ylabel: bool = True) -> None:
    """One layer's firing-rate histogram: units per rate bin (log scale), dead units in red left of 0."""
    counts = [int(c) for c in data["histogram"]]
    dead = int(data.get("dead", 0))
    units = sum(counts)
    width = 1.0 / bins
    alive = [counts[0] - dead, *counts[1:]]
    ax.bar(
        [b * width for b in range(bins)],
        alive,
        width=width,
        align="edge",
        color="C0",
        edgecolor="white",
        linewidth=0.5,
        label="units that fire",
    )
    ax.bar(
        [-width],
        [dead],
        width=width,
        align="edge",
        color="C3",
        label=f"dead: {dead} of {units} ({100 * dead / max(units, 1):.1f}%)",
    )
    log_count_axis(ax, max(counts))
    ax.set_ylim(0.7, max(max(counts), 1) * 2.0)
    ax.set_xlim(-1.3 * width, 1.0)
    nonzero, rows = data.get("nonzero"), data.get("rows")
    mean = f", mean rate {sum(nonzero) / (len(nonzero) * max(rows, 1)):.3f}" if nonzero and rows else ""
    ax.set_title(f"{layer}: {units} units{mean}", fontsize=9)
    ax.set_xlabel("firing rate (fraction of examples, output ≠ 0)", fontsize=8)
    if ylabel:
        ax.set_ylabel("units (log scale)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper center")
