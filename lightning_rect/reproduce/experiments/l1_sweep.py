"""The L1 sweep: rectifier networks without pre-training, one per L1 coefficient (the paper's
figure on MNIST: test error against exact sparsity)."""

from __future__ import annotations

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

#: The paper's figure shows 200 random networks; the W&B sweep draws as many.
RANDOM_NETWORKS = 200


def plan(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    return [
        finetune_run(ctx, Cell(dataset, "rectifier", l1=l1), lr, extra={"model.init_args.l1": l1}, tag=f"l1{num(l1)}")
        for dataset in datasets
        for l1 in ctx.budget.l1_grid
        for lr in ctx.lrs
    ]


def _coefficients(records: dict[str, Record], dataset: str):
    """(coefficient, cell result) of a data set, in plan order."""
    return [
        (cell.l1, result) for cell, result in cells(records).items() if cell.dataset == dataset and cell.l1 is not None
    ]


def markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    lines = []
    for dataset in datasets:
        lines += dataset_heading(dataset)
        if paper.L1_CURVE.get(dataset):
            lines += [
                "Paper (figure, approximate): test error flat until about 85% exact zeros, best near 80% "
                '(about 1.35%), about 2.3% at 98-99% zeros. "paper at this sparsity" reads that curve at '
                "our sparsity.",
                "",
            ]
        lines += [
            "| L1 coefficient | test error | exact sparsity | paper at this sparsity (approx.) | diff |",
            "|---|---|---|---|---|",
        ]
        for coefficient, result in _coefficients(records, dataset):
            our_sparsity = value_of(result, sparsity)
            theirs = paper.l1_curve_at(dataset, our_sparsity) if our_sparsity is not None else None
            lines.append(
                f"| {coefficient:g} | {ours(result)} | {ours(result, sparsity, 1)} | {pct(theirs)} | "
                f"{diff(value_of(result, test_error), theirs)} |"
            )
        lines.append("")
        if paper.L1_CURVE.get(dataset):
            lines += claims_heading() + claims(records, dataset) + [""]
    return lines


def claims(records: dict[str, Record], dataset: str) -> list[str]:
    points = [
        (l1, error, zeros)
        for l1, r in _coefficients(records, dataset)
        if (error := value_of(r, test_error)) is not None and (zeros := value_of(r, sparsity)) is not None
    ]
    best = min((p[1] for p in points), default=None)
    flat = [p for p in points if p[2] <= 85.0]
    worse = [p for p in flat if compare(dataset, p[1], best) == "higher"]
    verdict = (
        None
        if not flat
        else "Supported."
        if not worse
        else f"Not supported: {len(worse)} of {len(flat)} coefficients up to 85% zeros are worse than the best "
        "beyond noise."
    )
    shown = ", ".join(f"{p[2]:.1f}% zeros: {p[1]:.2f}%" for p in flat)
    lines = [
        claim(
            "Test error does not get worse with sparsity up to about 85% exact zeros.",
            verdict,
            f"Ours: {shown}; best {pct(best)}.",
        )
    ]
    dense = [p for p in points if p[2] > 85.0]
    verdict = (
        None
        if not dense
        else "Supported."
        if all(compare(dataset, p[1], best) == "higher" for p in dense[-1:])
        else "Not supported."
    )
    lines.append(
        claim(
            "Beyond that, error rises (paper: about 2.3% at 98-99% zeros).",
            verdict,
            "Ours: " + (", ".join(f"{p[2]:.1f}% zeros: {p[1]:.2f}%" for p in dense) or "—") + ".",
        )
    )
    return lines


def plot(plt, records: dict[str, Record], datasets: list[str]):
    fig, axes = plt.subplots(len(datasets), 3, figsize=(14, 4 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        points = [(l1, value_of(r, test_error), value_of(r, sparsity)) for l1, r in _coefficients(records, dataset)]
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


def sweeps(specs: list[RunSpec], datasets: list[str]) -> list[Sweep]:
    files = []
    for dataset in datasets:
        runs = [s for s in specs if s.dataset == dataset]
        grid = sorted({s.cell.l1 for s in runs if s.cell.l1 is not None})  # (every run of the sweep has one)
        lrs = list(dict.fromkeys(s.lr for s in runs))
        about = (
            f"The paper's L1 sweep on {paper.DATASET_TITLES[dataset]}: rectifier networks without pre-training, "
            f"L1 coefficient on the hidden activations from {grid[0]:g} to {grid[-1]:g}, {RANDOM_NETWORKS} random "
            "networks; plot test/err against test/sparsity/mean (the paper: no loss in error up to about 85% "
            "exact zeros, best near 80%).\n"
            f"Each run draws the coefficient ({len(grid)} values) and the learning rate ({len(lrs)}), "
            "equally likely, and a seed, so runs that draw the same values are still different networks "
            "(initialisation and order). reproduce keeps the best learning rate per coefficient on validation: "
            "group the runs by model.init_args.l1 to do the same."
        )
        files.append(
            Sweep(
                f"{dataset}_l1.yaml",
                f"{dataset} L1 coefficient vs sparsity",
                about,
                "l1_sweep",
                dataset,
                tuple(runs),
                random_networks=RANDOM_NETWORKS,
            )
        )
    return files


EXPERIMENT = Experiment(
    "l1_sweep",
    "L1 penalty sweep: test error and exact sparsity against the coefficient",
    ("mnist",),
    plan,
    markdown,
    sweeps,
    plot,
)
