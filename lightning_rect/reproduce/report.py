"""What a reproduction writes: ``runs.json`` (every run), ``<experiment>.md`` (the paper's numbers
beside ours and the difference) and ``<experiment>.png`` where the paper has a figure.

The reports are rewritten after every run, so a long reproduction can be read while it works;
cells whose runs have not finished show "—" and say why in the list of runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_rect.reproduce import paper
from lightning_rect.reproduce.budgets import BUDGETS
from lightning_rect.reproduce.experiments import EXPERIMENTS, TABLE1_ACTIVATIONS, SEMI_ACTIVATIONS
from lightning_rect.reproduce.runner import Record, best_of, duration, finite

DASH = "—"
PLOT_HINT = "pip install 'lightning-rect[plot]'  (or: pip install matplotlib)"


# -- numbers out of a record ---------------------------------------------------------------------
def test_error(record: Record | None) -> float | None:
    """Test error in percent."""
    value = record.results.get("test/err") if record is not None and record.finished else None
    return 100 * value if finite(value) else None


def sparsity(record: Record | None) -> float | None:
    """Exact sparsity of the hidden layers on the test set, in percent (SparsityMonitor's mean
    over layers where it ran, else the model's own count over all hidden units)."""
    if record is None or not record.finished:
        return None
    value = record.results.get("test/sparsity/mean", record.results.get("test/sparsity"))
    return 100 * value if finite(value) else None


def pct(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}%" if value is not None else DASH


def diff(ours: float | None, theirs: float | None) -> str:
    return f"{ours - theirs:+.2f}" if ours is not None and theirs is not None else DASH


def cells(records: dict[str, Record]) -> dict[str, tuple[Record | None, list[Record]]]:
    """cell -> (the run chosen on validation, all runs of the cell), in plan order."""
    grouped: dict[str, list[Record]] = {}
    for record in records.values():
        grouped.setdefault(record.spec.cell, []).append(record)
    return {cell: (best_of(runs), runs) for cell, runs in grouped.items()}


def _cell_note(cell: tuple[Record | None, list[Record]]) -> str:
    """Why a cell is empty: the status of its runs."""
    chosen, runs = cell
    if chosen is not None:
        return ""
    statuses = sorted({r.status for r in runs})
    return f" ({', '.join(statuses)})"


def _ours(cell: tuple[Record | None, list[Record]] | None, metric: Callable[[Record | None], float | None] = test_error,
          digits: int = 2) -> str:
    if cell is None:
        return DASH
    value = metric(cell[0])
    return pct(value, digits) if value is not None else DASH + _cell_note(cell)


# -- runs.json -------------------------------------------------------------------------------------
def write_runs_json(path: Path, meta: dict[str, Any], records: dict[str, Record], out: Path) -> None:
    chosen = {id(c[0]) for c in cells(records).values() if c[0] is not None}
    runs = [{**r.to_json(out), "chosen": id(r) in chosen} for r in records.values()]
    _atomic_write(path, json.dumps({**meta, "runs": runs}, indent=2, default=str) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- Markdown --------------------------------------------------------------------------------------
def header(experiment: str, meta: dict[str, Any], records: dict[str, Record]) -> list[str]:
    budget = BUDGETS[meta["budget"]]
    counts: dict[str, int] = {}
    for record in records.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    seconds = sum(_run_seconds(r) for r in records.values())
    return [
        f"# {EXPERIMENTS[experiment].title}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Budget: **{budget.name}**: {budget.summary}.  ",
        f"Runs: {len(records)} ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"training time of the runs: {duration(seconds)}.  ",
        f"Paper: {paper.CITATION}, numbers as given in ../shared/PAPER.md. "
        "Errors are test errors of the checkpoint chosen on validation; diff = ours - paper, in percentage points.",
        "",
    ]


def _run_seconds(record: Record) -> float:
    if record.status == "done" and record.seconds is not None:
        return record.seconds
    if record.finished and finite(record.results.get("fit_seconds")):
        return record.results["fit_seconds"]
    return 0.0


def runs_table(records: dict[str, Record], out: Path) -> list[str]:
    chosen = {id(c[0]) for c in cells(records).values() if c[0] is not None}
    lines = ["## Every run", "",
             "`*`: the run chosen for its cell on validation. Logs, checkpoints and results.json: "
             f"`{_shown(out / 'runs')}/<run>/version_0/`.", "",
             "| run | status | lr | epochs | best epoch (from 0) | validation | test | sparsity | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for record in records.values():
        res = record.results or {}
        mark = " *" if id(record) in chosen else ""
        if record.spec.phase == "pretrain":
            val = _fmt(res.get("best_val"), "{:.4g} (recon)")
            test = _fmt(res.get("test/recon"), "{:.4g} (recon)")
        else:
            val = pct(100 * res["best_val"]) if finite(res.get("best_val")) else DASH
            test = pct(test_error(record))
        best_epoch = res.get("best_epoch")
        status = record.status + (f": {record.error}" if record.error else "")
        lines.append(f"| `{record.spec.id}`{mark} | {status.replace('|', '/')} | {record.spec.labels.get('lr')} | "
                     f"{res.get('epochs', DASH)} | {best_epoch if best_epoch is not None else DASH} | {val} | {test} | "
                     f"{pct(sparsity(record), 1)} | {duration(_run_seconds(record))} |")
    return lines + [""]


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it, so reports committed to a
    repository do not name one machine's folders."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _fmt(value: Any, pattern: str) -> str:
    return pattern.format(value) if finite(value) else DASH


def table1_markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    columns = " | ".join(f"{paper.DATASET_TITLES[d]} paper | ours | diff" for d in datasets)
    lines = [f"| network | {columns} |", "|---|" + "---|---|---|" * len(datasets)]
    for pretrained in (True, False):
        for activation in TABLE1_ACTIVATIONS:
            name = f"{activation}, {'with' if pretrained else 'without'} pre-training"
            row = []
            for dataset in datasets:
                cell = by_cell.get(f"{dataset}/{activation}/{'pretrained' if pretrained else 'none'}")
                theirs = paper.TABLE1[(activation, pretrained)].get(dataset)
                row += [pct(theirs), _ours(cell), diff(test_error(cell[0]) if cell else None, theirs)]
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    for pretrained in (True, False):
        row = []
        for dataset in datasets:
            cell = by_cell.get(f"{dataset}/rectifier/{'pretrained' if pretrained else 'none'}")
            theirs = paper.SPARSITY.get(dataset)
            row += [pct(theirs, 1), _ours(cell, sparsity, 1), diff(sparsity(cell[0]) if cell else None, theirs)]
        lines.append(f"| exact sparsity, rectifier {'with' if pretrained else 'without'} pre-training | "
                     + " | ".join(row) + " |")
    lines += ["", "Sparsity: the paper gives one number per data set for its rectifier networks (PAPER.md does "
              "not say which row), so both of our rectifier rows are compared with it.", ""]
    return lines


def l1_markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    lines = []
    for dataset in datasets:
        curve = paper.L1_CURVE.get(dataset)
        lines += [f"### {paper.DATASET_TITLES[dataset]}", ""]
        if curve:
            lines += ["Paper (figure, approximate): test error flat until about 85% exact zeros, best near 80% "
                      "(about 1.35%), about 2.3% at 98-99% zeros. \"paper at this sparsity\" reads that curve at "
                      "our sparsity.", ""]
        lines += ["| L1 coefficient | test error | exact sparsity | paper at this sparsity (approx.) | diff |",
                  "|---|---|---|---|---|"]
        for cell_name, cell in by_cell.items():
            if not cell_name.startswith(f"{dataset}/l1="):
                continue
            coefficient = cell[1][0].spec.labels["l1"]
            ours_sparsity = sparsity(cell[0])
            theirs = paper.l1_curve_at(dataset, ours_sparsity) if ours_sparsity is not None else None
            lines.append(f"| {coefficient:g} | {_ours(cell)} | {_ours(cell, sparsity, 1)} | {pct(theirs)} | "
                         f"{diff(test_error(cell[0]), theirs)} |")
        lines.append("")
    return lines


def _a_label(a: float) -> str:
    return "rectifier (a = inf)" if math.isinf(a) else f"{a:g}"


def sharpness_markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    lines = []
    for dataset in datasets:
        reference = paper.SHARPNESS.get(dataset, {})
        lines += [f"### {paper.DATASET_TITLES[dataset]}", "",
                  "| a | paper | ours | diff | exact sparsity |", "|---|---|---|---|---|"]
        for cell_name, cell in by_cell.items():
            if not cell_name.startswith(f"{dataset}/a="):
                continue
            a = cell[1][0].spec.labels["a"]
            theirs = reference.get(a)
            lines.append(f"| {_a_label(a)} | {pct(theirs)} | {_ours(cell)} | {diff(test_error(cell[0]), theirs)} | "
                         f"{_ours(cell, sparsity, 1)} |")
        lines.append("")
    return lines


def semi_markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    lines = []
    for dataset in datasets:
        reference = paper.SEMI.get(dataset, {})
        lines += [f"### {paper.DATASET_TITLES[dataset]}", "",
                  "Paper numbers are read off its figure (approximate).", "",
                  "| labeled fraction | network | paper | ours | diff |", "|---|---|---|---|---|"]
        fractions = sorted({r.spec.labels["fraction"] for r in records.values()
                            if r.spec.dataset == dataset and "fraction" in r.spec.labels})
        for fraction in fractions:
            for activation in SEMI_ACTIVATIONS:
                for pretrained in (False, True):
                    cell = by_cell.get(f"{dataset}/{activation}/{'pretrained' if pretrained else 'none'}/f={fraction:g}")
                    theirs = reference.get((activation, pretrained), {}).get(fraction)
                    name = activation + (" + pre-training" if pretrained else "")
                    lines.append(f"| {fraction:g} | {name} | {pct(theirs)} | {_ours(cell)} | "
                                 f"{diff(test_error(cell[0]) if cell else None, theirs)} |")
        lines.append("")
    return lines


MARKDOWN = {"table1": table1_markdown, "l1_sweep": l1_markdown, "sharpness": sharpness_markdown,
            "semi_supervised": semi_markdown}


# -- plots -----------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def l1_plot(plt, records: dict[str, Record], datasets: list[str]):
    by_cell = cells(records)
    fig, axes = plt.subplots(len(datasets), 3, figsize=(14, 4 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        points = [(c[1][0].spec.labels["l1"], test_error(c[0]), sparsity(c[0]))
                  for name, c in by_cell.items() if name.startswith(f"{dataset}/l1=") and c[0] is not None]
        points = [p for p in points if p[1] is not None and p[2] is not None]
        coefficient = [p[0] for p in points]
        row[0].plot(coefficient, [p[1] for p in points], "o-", label="ours")
        row[0].set(xlabel="L1 coefficient", ylabel="test error (%)", title=f"{paper.DATASET_TITLES[dataset]}: error")
        row[1].plot(coefficient, [p[2] for p in points], "o-", color="tab:green", label="ours")
        row[1].set(xlabel="L1 coefficient", ylabel="exact sparsity (%)", title="sparsity of the hidden layers")
        for ax in row[:2]:
            ax.set_xscale("symlog", linthresh=1e-4)
        row[2].plot([p[2] for p in points], [p[1] for p in points], "o", label="ours")
        curve = paper.L1_CURVE.get(dataset)
        if curve:
            row[2].plot(*zip(*curve), "k--", label="paper (figure, approx.)")
        row[2].set(xlabel="exact sparsity (%)", ylabel="test error (%)", title="error against sparsity")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend()
    return fig


def sharpness_plot(plt, records: dict[str, Record], datasets: list[str]):
    by_cell = cells(records)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        values = sorted({c[1][0].spec.labels["a"] for n, c in by_cell.items() if n.startswith(f"{dataset}/a=")})
        reference = paper.SHARPNESS.get(dataset, {})
        values = sorted(set(values) | set(reference)) if reference else values
        x = {a: i for i, a in enumerate(values)}  # evenly spaced, so the rectifier (inf) fits on the axis
        ours = [(x[a], test_error(by_cell[f"{dataset}/a={a:g}"][0])) for a in values if f"{dataset}/a={a:g}" in by_cell]
        ours = [p for p in ours if p[1] is not None]
        if ours:
            ax.plot(*zip(*ours), "o-", label="ours")
        if reference:
            ax.plot([x[a] for a in reference], list(reference.values()), "k--s", label="paper")
        ax.set_xticks(range(len(values)), ["rect." if math.isinf(a) else f"{a:g}" for a in values])
        ax.set(xlabel="softplus sharpness a", ylabel="test error (%)", title=paper.DATASET_TITLES[dataset])
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def semi_plot(plt, records: dict[str, Record], datasets: list[str]):
    by_cell = cells(records)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    colors = {("rectifier", False): "tab:blue", ("rectifier", True): "tab:cyan",
              ("tanh", False): "tab:red", ("tanh", True): "tab:orange"}
    for ax, dataset in zip(axes[0], datasets):
        reference = paper.SEMI.get(dataset, {})
        for (activation, pretrained), color in colors.items():
            name = activation + (" + pre-training" if pretrained else "")
            kind = "pretrained" if pretrained else "none"
            ours = sorted((c[1][0].spec.labels["fraction"], test_error(c[0])) for n, c in by_cell.items()
                          if n.startswith(f"{dataset}/{activation}/{kind}/f=") and test_error(c[0]) is not None)
            if ours:
                ax.plot(*zip(*ours), "o-", color=color, label=f"{name} (ours)")
            theirs = reference.get((activation, pretrained))
            if theirs:
                ax.plot(list(theirs), list(theirs.values()), "--", color=color, alpha=0.7, label=f"{name} (paper)")
        ax.set(xlabel="fraction of labeled training examples", ylabel="test error (%)", title=paper.DATASET_TITLES[dataset])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


PLOTS = {"l1_sweep": l1_plot, "sharpness": sharpness_plot, "semi_supervised": semi_plot}


# -- all of it -------------------------------------------------------------------------------------
def write_reports(out: Path, experiment: str, meta: dict[str, Any], records: dict[str, Record], datasets: list[str],
                  plot: bool = True) -> dict[str, Path | None]:
    """Write runs.json and the Markdown (always) and the PNG (when ``plot`` and matplotlib is there)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {"json": out / "runs.json", "markdown": out / f"{experiment}.md", "png": None}
    write_runs_json(paths["json"], meta, records, out)
    body = header(experiment, meta, records) + MARKDOWN[experiment](records, datasets) + runs_table(records, out)
    _atomic_write(paths["markdown"], "\n".join(body) + "\n")
    if plot and experiment in PLOTS:
        plt = _pyplot()
        if plt is None:
            print(f"matplotlib is not installed, so {experiment}.png was not drawn; install it with: {PLOT_HINT}")
        else:
            fig = PLOTS[experiment](plt, records, datasets)
            fig.suptitle(EXPERIMENTS[experiment].title + f" (budget {meta['budget']})", fontsize=10)
            fig.tight_layout()
            paths["png"] = out / f"{experiment}.png"
            fig.savefig(paths["png"], dpi=110)
            plt.close(fig)
    return paths
