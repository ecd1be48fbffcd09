"""Softplus sharpness: (1/a) softplus(a x) for several a, and the rectifier (a = inf); no pre-training.

Like with like: every network starts from the same Glorot-uniform weights (``sharp_softplus`` has
the rectifier's gain for every a) and carries no L1 penalty (``budgets.L1_ACTIVATIONS``); the
rectifier also runs with its L1 penalty, as in Table 1 (the paper's sweep ends on Table 1's cells).
"""

from __future__ import annotations

import math

from lightning_rect.reproduce import paper
from lightning_rect.reproduce.experiments.base import Experiment
from lightning_rect.reproduce.plan import Cell, Context, RunSpec, finetune_run, num
from lightning_rect.reproduce.report import (
    cells,
    claim,
    claims_heading,
    compare,
    dataset_heading,
    diff,
    ours,
    pct,
    sparsity,
    test_error,
    value_of,
)
from lightning_rect.reproduce.runner import Record
from lightning_rect.reproduce.sweeps import Sweep


def plan(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    runs = []
    variants: list[tuple[str, dict[str, float] | None, str, float | None]]  # (activation, its args, tag, l1)
    for dataset in datasets:
        for a in ctx.budget.sharpness:
            if math.isinf(a):
                # like the others (no L1), and Table 1's rectifier (with it)
                variants = [("rectifier", None, "l10", 0.0), ("rectifier", None, "", None)]
            else:
                variants = [("sharp_softplus", {"a": a}, f"a{num(a)}", None)]
            for activation, args, tag, l1 in variants:
                extra = {} if l1 is None else {"model.init_args.l1": l1}
                runs += [
                    finetune_run(
                        ctx, Cell(dataset, activation, a=a, l1=l1), lr, activation_args=args, tag=tag, extra=extra
                    )
                    for lr in ctx.lrs
                ]
    return runs


def _by_a(records: dict[str, Record], dataset: str, with_l1: bool = False):
    """a -> cell result of a data set, in plan order: the like-with-like sweep (no L1), or
    (``with_l1``) the rectifier with its L1 penalty, as in Table 1."""

    def table1_rectifier(cell: Cell) -> bool:
        return cell.a is not None and math.isinf(cell.a) and cell.l1 is None

    return {
        cell.a: result
        for cell, result in cells(records).items()
        if cell.dataset == dataset and cell.a is not None and table1_rectifier(cell) == with_l1
    }


def _a_label(a: float) -> str:
    return "rectifier (a = inf)" if math.isinf(a) else f"{a:g}"


def markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    lines = []
    for dataset in datasets:
        reference = paper.SHARPNESS.get(dataset, {})
        lines += dataset_heading(dataset) + ["| a | paper | ours | diff | exact sparsity |", "|---|---|---|---|---|"]
        for a, result in _by_a(records, dataset).items():
            theirs = reference.get(a)
            lines.append(
                f"| {_a_label(a)} | {pct(theirs)} | {ours(result)} | {diff(value_of(result), theirs)} | "
                f"{ours(result, sparsity, 1)} |"
            )
        for a, result in _by_a(records, dataset, with_l1=True).items():
            theirs = reference.get(a)
            lines.append(
                f"| rectifier with L1 (Table 1's) | {pct(theirs)} | {ours(result)} | "
                f"{diff(value_of(result), theirs)} | {ours(result, sparsity, 1)} |"
            )
        lines += [
            "",
            "No L1 penalty in the sweep (the rectifier with L1 is the last row) and one initialisation "
            "for every a (Glorot uniform, gain 1).",
            "",
        ]
        lines += claims_heading() + claims(records, dataset) + [""]
    return lines


def claims(records: dict[str, Record], dataset: str) -> list[str]:
    errors = {a: value_of(result, test_error) for a, result in _by_a(records, dataset).items()}
    finite_a = sorted(a for a in errors if not math.isinf(a))
    shown = ", ".join(f"{_a_label(a)}: {pct(errors[a])}" for a in sorted(errors))
    lines = []
    verdict = None
    if finite_a and all(errors[a] is not None for a in errors):
        ordered = [errors[a] for a in sorted(errors)]
        rises = [(a, b) for a, b in zip(ordered, ordered[1:]) if compare(dataset, b, a) == "higher"]
        overall = compare(dataset, ordered[-1], ordered[0])
        if overall == "lower" and not rises:
            verdict = "Supported."
        elif overall == "lower":
            verdict = f"Partly: lower at the end, but it rises beyond noise {len(rises)} time(s) on the way."
        else:
            verdict = (
                f"Not supported: the rectifier's error is the same as a = {finite_a[0]:g}'s (within noise)."
                if overall == "same"
                else f"Not supported: the rectifier's error is higher than a = {finite_a[0]:g}'s."
            )
    lines.append(
        claim(
            "Error falls steadily as a grows, from softplus (a = 1) to the rectifier (paper on NORB: "
            "17.68% to 16.40%).",
            verdict,
            f"Ours (no L1): {shown}.",
        )
    )
    verdict = None
    rectifier = errors.get(math.inf)
    if rectifier is not None and finite_a and all(errors[a] is not None for a in finite_a):
        best = min(error for error in (errors[a] for a in finite_a) if error is not None)
        verdict = {
            "lower": "Supported.",
            "same": "Supported within noise (tied with the best a).",
            "higher": "Not supported.",
        }[compare(dataset, rectifier, best)]
    lines.append(
        claim(
            "The rectifier is best.",
            verdict,
            f"Ours: rectifier {pct(rectifier)}, best softplus "
            f"{pct(min((error for error in (errors[a] for a in finite_a) if error is not None), default=None))}.",
        )
    )
    return lines


def plot(plt, records: dict[str, Record], datasets: list[str]):
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        by_a = _by_a(records, dataset)
        reference = paper.SHARPNESS.get(dataset, {})
        values = sorted(set(by_a) | set(reference))
        x = {a: i for i, a in enumerate(values)}  # evenly spaced, so the rectifier (inf) fits on the axis
        points = [(x[a], value_of(result, test_error)) for a, result in sorted(by_a.items())]
        points = [p for p in points if p[1] is not None]
        if points:
            ax.plot(*zip(*points), "o-", label="ours (no L1)")
        for a, result in _by_a(records, dataset, with_l1=True).items():
            if value_of(result, test_error) is not None:
                ax.plot([x[a]], [value_of(result, test_error)], "^", color="tab:green", label="rectifier with L1")
        if reference:
            ax.plot([x[a] for a in reference], list(reference.values()), "k--s", label="paper")
        ax.set_xticks(range(len(values)), ["rect." if math.isinf(a) else f"{a:g}" for a in values])
        ax.set(xlabel="softplus sharpness a", ylabel="test error (%)", title=paper.DATASET_TITLES[dataset])
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def sweeps(specs: list[RunSpec], datasets: list[str]) -> list[Sweep]:
    files = []
    for dataset in datasets:
        runs = [s for s in specs if s.dataset == dataset]
        finite = [a for a in dict.fromkeys(s.cell.a for s in runs) if a is not None and not math.isinf(a)]
        reference = paper.SHARPNESS.get(dataset)
        errors = (
            (" The paper's test errors: " + ", ".join(f"{e:g}" for e in reference.values()) + "% (rectifier last).")
            if reference
            else ""
        )
        about = (
            f"Softplus sharpness on {paper.DATASET_TITLES[dataset]} (the paper's sweep): hidden units "
            f"(1/a) softplus(a x) for a in {{{', '.join(f'{a:g}' for a in finite)}}}, which goes from softplus "
            f"(a = 1) towards the rectifier, plus the rectifier itself; no pre-training.{errors} Each network "
            "at each learning rate; the best validation error per network is its result (group the runs by "
            "`config`).\n"
            "The network is one `config` fragment (activation and its arguments together) because the "
            "rectifier takes no `a`: a grid over activation x a would build invalid rectifiers. In W&B, "
            "model.init_args.activation_args.a is a config column for plots against a."
        )
        files.append(
            Sweep(
                f"{dataset}_sharpness.yaml", f"{dataset} softplus sharpness", about, "sharpness", dataset, tuple(runs)
            )
        )
    return files


EXPERIMENT = Experiment(
    "sharpness",
    "Softplus sharpness: test error against a in (1/a) softplus(a x)",
    ("norb",),
    plan,
    markdown,
    sweeps,
    plot,
)
