"""Softplus sharpness: (1/a) softplus(a x) for several a, and the rectifier (a = inf); no pre-training."""

from __future__ import annotations

import math

from lightning_rect.reproduce import paper
from lightning_rect.reproduce.experiments.base import Experiment
from lightning_rect.reproduce.plan import Cell, Context, RunSpec, finetune_run, num
from lightning_rect.reproduce.report import cells, dataset_heading, diff, ours, pct, sparsity, test_error, value_of
from lightning_rect.reproduce.runner import Record
from lightning_rect.reproduce.sweeps import Sweep


def plan(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    runs = []
    for dataset in datasets:
        for a in ctx.budget.sharpness:
            if math.isinf(a):
                activation, args, tag = "rectifier", None, ""
            else:
                activation, args, tag = "sharp_softplus", {"a": a}, f"a{num(a)}"
            runs += [finetune_run(ctx, Cell(dataset, activation, a=a), lr, activation_args=args, tag=tag)
                     for lr in ctx.lrs]
    return runs


def _by_a(records: dict[str, Record], dataset: str):
    """a -> cell result of a data set, in plan order."""
    return {cell.a: result for cell, result in cells(records).items() if cell.dataset == dataset and cell.a is not None}


def _a_label(a: float) -> str:
    return "rectifier (a = inf)" if math.isinf(a) else f"{a:g}"


def markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    lines = []
    for dataset in datasets:
        reference = paper.SHARPNESS.get(dataset, {})
        lines += dataset_heading(dataset) + ["| a | paper | ours | diff | exact sparsity |", "|---|---|---|---|---|"]
        for a, result in _by_a(records, dataset).items():
            theirs = reference.get(a)
            lines.append(f"| {_a_label(a)} | {pct(theirs)} | {ours(result)} | {diff(value_of(result), theirs)} | "
                         f"{ours(result, sparsity, 1)} |")
        lines.append("")
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
            ax.plot(*zip(*points), "o-", label="ours")
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
        finite = [a for a in dict.fromkeys(s.cell.a for s in runs) if not math.isinf(a)]
        reference = paper.SHARPNESS.get(dataset)
        errors = (" The paper's test errors: " + ", ".join(f"{e:g}" for e in reference.values()) + "% (rectifier last).") \
            if reference else ""
        about = (f"Softplus sharpness on {paper.DATASET_TITLES[dataset]} (the paper's sweep): hidden units "
                 f"(1/a) softplus(a x) for a in {{{', '.join(f'{a:g}' for a in finite)}}}, which goes from softplus "
                 f"(a = 1) towards the rectifier, plus the rectifier itself; no pre-training.{errors} Each network "
                 "at each learning rate; the best validation error per network is its result (group the runs by "
                 "`config`).\n"
                 "The network is one `config` fragment (activation and its arguments together) because the "
                 "rectifier takes no `a`: a grid over activation x a would build invalid rectifiers. In W&B, "
                 "model.init_args.activation_args.a is a config column for plots against a.")
        files.append(Sweep(f"{dataset}_sharpness.yaml", f"{dataset} softplus sharpness", about, "sharpness", dataset,
                           tuple(runs)))
    return files


EXPERIMENT = Experiment("sharpness", "Softplus sharpness: test error against a in (1/a) softplus(a x)",
                        ("norb",), plan, markdown, sweeps, plot)
