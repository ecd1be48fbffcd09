"""What every reproduction writes: ``runs.json`` (every run), ``<experiment>.md`` (the paper's
numbers beside ours and the difference, then every run) and ``<experiment>.png`` where the paper
has a figure. The experiment's own table and plot come from its module in ``experiments/``; the
pieces they share (numbers of a run, cells, formatting, header, the list of runs) are here.

The reports are rewritten after every run, so a long reproduction can be read while it works;
cells whose runs have not finished show "—" and say why in the list of runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from lightning_rect.app.plots.summary import PLOT_HINT
from lightning_rect.files import write_atomically
from lightning_rect.reproduce import paper
from lightning_rect.reproduce.budgets import BUDGETS
from lightning_rect.reproduce.catalog import CATALOG
from lightning_rect.reproduce.plan import Cell
from lightning_rect.reproduce.runner import Record, best_of, duration, finite

if TYPE_CHECKING:
    from lightning_rect.reproduce.experiments.base import Experiment

DASH = "—"


# -- numbers out of a record ---------------------------------------------------------------------
def test_error(record: Record | None) -> float | None:
    """Test error in percent."""
    value = record.result("test/err") if record is not None else None
    return 100 * value if finite(value) else None


def sparsity(record: Record | None) -> float | None:
    """Exact sparsity of the hidden layers on the test set, in percent: the SparsityMonitor's mean
    over layers of each layer's fraction of exact zeros."""
    value = record.result("test/sparsity/mean") if record is not None else None
    return 100 * value if finite(value) else None


# -- cells -----------------------------------------------------------------------------------------
@dataclass
class CellResult:
    """The runs of one cell and the one chosen on validation (None until one has finished)."""

    chosen: Record | None
    runs: list[Record]

    def value(self, metric: Callable[[Record | None], float | None] = test_error) -> float | None:
        return metric(self.chosen)

    def why_empty(self) -> str:
        """The status of its runs, shown where the cell has no number yet."""
        return "" if self.chosen is not None else f" ({', '.join(sorted({r.status for r in self.runs}))})"


def cells(records: dict[str, Record]) -> dict[Cell, CellResult]:
    """Each cell's result, in plan order."""
    grouped: dict[Cell, list[Record]] = {}
    for record in records.values():
        grouped.setdefault(record.spec.cell, []).append(record)
    return {cell: CellResult(best_of(runs), runs) for cell, runs in grouped.items()}


def value_of(result: CellResult | None, metric: Callable[[Record | None], float | None] = test_error) -> float | None:
    return result.value(metric) if result is not None else None


# -- formatting ------------------------------------------------------------------------------------
def pct(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}%" if value is not None else DASH


def diff(ours: float | None, theirs: float | None) -> str:
    return f"{ours - theirs:+.2f}" if ours is not None and theirs is not None else DASH


def ours(
    result: CellResult | None, metric: Callable[[Record | None], float | None] = test_error, digits: int = 2
) -> str:
    """Our number for a cell, or "—" with the status of its runs."""
    if result is None:
        return DASH
    value = result.value(metric)
    return pct(value, digits) if value is not None else DASH + result.why_empty()


# -- the paper's claims, checked against our numbers ----------------------------------------------------
#: Test-set sizes (docs/paper.md#data-sets; digits: the config's split), for the noise of a difference
#: of two errors; from the table of data sets.
TEST_SIZES = {name: facts.test_size for name, facts in CATALOG.items() if facts.test_size}


def noise_of_difference(dataset: str, a: float, b: float) -> float | None:
    """Two standard deviations, in points, of the difference of two independent test errors
    ``a`` and ``b`` (percent) on the data set's test set; None for an unknown size."""
    n = TEST_SIZES.get(dataset)
    if n is None:
        return None
    return 2 * sum((p / 100) * (1 - p / 100) / n for p in (a, b)) ** 0.5 * 100


@overload
def compare(dataset: str, a: float, b: float) -> str: ...
@overload
def compare(dataset: str, a: float | None, b: float | None) -> str | None: ...
def compare(dataset: str, a: float | None, b: float | None) -> str | None:
    """ "lower", "higher" or "same" (within the noise of the difference) for errors a against b."""
    if a is None or b is None:
        return None
    tolerance = noise_of_difference(dataset, a, b) or 0.0
    return "lower" if a < b - tolerance else "higher" if a > b + tolerance else "same"


def claim(text: str, verdict: str | None, evidence: str) -> str:
    """One line of a report's "claims" list: the paper's claim, our verdict and the numbers."""
    return f"- {text} **{verdict or 'Not measured yet.'}** {evidence}"


def claims_heading() -> list[str]:
    return [
        "#### The paper's claims against ours",
        "",
        '"Same" means within two standard deviations of the difference of two test errors on this '
        "test set (binomial noise; e.g. about 0.34 points near 1.5% on MNIST's 10,000 examples).",
        "",
    ]


def dataset_heading(dataset: str) -> list[str]:
    return [f"### {paper.DATASET_TITLES[dataset]}", ""]


# -- runs.json -------------------------------------------------------------------------------------
def write_runs_json(path: Path, meta: dict[str, Any], records: dict[str, Record], out: Path) -> None:
    chosen = {id(c.chosen) for c in cells(records).values() if c.chosen is not None}
    runs = [{**r.to_json(out), "chosen": id(r) in chosen} for r in records.values()]
    atomic_write(path, json.dumps({**meta, "runs": runs}, indent=2, default=str) + "\n")


def atomic_write(path: Path, text: str) -> None:
    write_atomically(path, text)


# -- the Markdown around the experiment's table ------------------------------------------------------
def header(title: str, meta: dict[str, Any], records: dict[str, Record]) -> list[str]:
    budget = BUDGETS[meta["budget"]]
    counts: dict[str, int] = {}
    for record in records.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    seconds = sum(run_seconds(r) for r in records.values())
    return [
        f"# {title}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Budget: **{budget.name}**: {budget.summary}.  ",
        *learning_rate_lines(meta),
        f"Runs: {len(records)} ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        f"training time of the runs: {duration(seconds)}.  ",
        f"Paper: {paper.CITATION}, numbers as given in docs/paper.md#results-to-compare-against. "
        "Errors are test errors of the checkpoint chosen on validation; diff = ours - paper, in percentage points.",
        "",
    ]


def learning_rate_lines(meta: dict[str, Any]) -> list[str]:
    """The header line for ``--lrs`` / ``--pretrain-lrs``, when the command gave them."""
    parts = []
    if meta.get("lrs"):
        phases = "fine-tuning" if meta.get("pretrain_lrs") else "both phases"
        parts.append(f"{phases} " + ", ".join(f"{lr:g}" for lr in meta["lrs"]))
    if meta.get("pretrain_lrs"):
        parts.append("pre-training " + ", ".join(f"{lr:g}" for lr in meta["pretrain_lrs"]))
    return (
        [f"Learning rates (given on the command line, instead of the budget's): {'; '.join(parts)}.  "] if parts else []
    )


def run_seconds(record: Record) -> float:
    # a finished run's own fit time counts every attempt (the Timer's state is resumed with the run);
    # the runner's seconds are this attempt's wall time only
    if finite(seconds := record.result("fit_seconds")):
        return seconds
    if record.status in ("done", "failed") and record.seconds is not None:
        return record.seconds
    return 0.0


def runs_table(records: dict[str, Record], out: Path) -> list[str]:
    chosen = {id(c.chosen) for c in cells(records).values() if c.chosen is not None}
    lines = [
        "## Every run",
        "",
        "`*`: the run chosen for its cell on validation. Logs, checkpoints and results.json: "
        f"`{shown(out / 'runs')}/<run>/version_0/`.",
        "",
        "| run | status | lr | epochs | best epoch (from 0) | validation | test | sparsity | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
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
        status = record.status + (f": {_run_paths_shown(record.error, record.spec.id, out)}" if record.error else "")
        if res.get("copied_from"):  # the same run, finished in another experiment's folder
            status += f" (copied from {res['copied_from']})"
        lines.append(
            f"| `{record.spec.id}`{mark} | {status.replace('|', '/')} | {record.spec.lr} | "
            f"{res.get('epochs', DASH)} | {best_epoch if best_epoch is not None else DASH} | {val} | {test} | "
            f"{pct(sparsity(record), 1)} | {duration(run_seconds(record))} |"
        )
    return lines + [""]


def _run_paths_shown(text: str, run: str, out: Path) -> str:
    """An error line with the run's files named as in the rest of the report: errors name them by
    the absolute path they had on the machine that ran it."""
    return re.sub(r"\S*/runs/" + re.escape(run) + "/", f"{shown(out / 'runs')}/{run}/", text)


def shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it, so reports committed to a
    repository do not name one machine's folders."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _fmt(value: Any, pattern: str) -> str:
    return pattern.format(value) if finite(value) else DASH


# -- all of it -------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: The experiment's reasoning and history, kept beside its report and included at its end.
NOTES_FILE = "notes.md"


def notes(out: Path) -> list[str]:
    path = out / NOTES_FILE
    return ["", path.read_text().rstrip("\n")] if path.is_file() else []


def write_reports(
    out: Path,
    experiment: Experiment,
    meta: dict[str, Any],
    records: dict[str, Record],
    datasets: list[str],
    plot: bool = True,
) -> dict[str, Path | None]:
    """Write runs.json and the Markdown (always) and the PNG (when ``plot``, the experiment has a
    figure and matplotlib is there)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out / "runs.json", out / f"{experiment.name}.md"
    paths: dict[str, Path | None] = {"json": json_path, "markdown": markdown_path, "png": None}
    write_runs_json(json_path, meta, records, out)
    body = header(experiment.title, meta, records) + experiment.markdown(records, datasets) + runs_table(records, out)
    body += notes(out)
    atomic_write(markdown_path, "\n".join(body) + "\n")
    if plot and experiment.plot is not None:
        plt = _pyplot()
        if plt is None:
            print(f"matplotlib is not installed, so {experiment.name}.png was not drawn; install it with: {PLOT_HINT}")
        else:
            fig = experiment.plot(plt, records, datasets)
            fig.suptitle(experiment.title + f" (budget {meta['budget']})", fontsize=10)
            fig.tight_layout()
            paths["png"] = out / f"{experiment.name}.png"
            fig.savefig(paths["png"], dpi=110)
            plt.close(fig)
    return paths
