"""Semi-supervised: fine-tuning on a labeled fraction, with pre-training on every training input or
without (the paper's NORB figure)."""

from __future__ import annotations

import math

from lightning_rect.reproduce import paper
from lightning_rect.reproduce.budgets import DATASETS
from lightning_rect.reproduce.experiments.base import Experiment
from lightning_rect.reproduce.experiments.table1 import pretraining_about
from lightning_rect.reproduce.plan import Cell, Context, RunSpec, finetune_epochs, finetune_run, num, pretrain_run
from lightning_rect.reproduce.report import (
    cells,
    claim,
    claims_heading,
    compare,
    dataset_heading,
    diff,
    ours,
    pct,
    test_error,
    value_of,
)
from lightning_rect.reproduce.runner import Record
from lightning_rect.reproduce.sweeps import CHECKPOINTS, Sweep

ACTIVATIONS = ("rectifier", "tanh")
#: Plot colours, by (activation, pre-trained).
COLORS = {
    ("rectifier", False): "tab:blue",
    ("rectifier", True): "tab:cyan",
    ("tanh", False): "tab:red",
    ("tanh", True): "tab:orange",
}


def plan(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    runs = []
    for dataset in datasets:
        facts = DATASETS[dataset]
        base_epochs = finetune_epochs(ctx, dataset, facts.semi_config)
        for activation in ACTIVATIONS:
            pre = [pretrain_run(ctx, dataset, activation, lr) for lr in ctx.pretrain_lrs]
            runs += pre
            for fraction in ctx.budget.fractions:
                # fewer labels, fewer steps per epoch: more epochs, up to a cap (not for a stream)
                epochs = None
                if base_epochs is not None and not facts.stream:
                    epochs = min(math.ceil(base_epochs / fraction), ctx.budget.semi_epoch_cap * base_epochs)
                for needs in (tuple(r.id for r in pre), ()):
                    cell = Cell(dataset, activation, pretrained=bool(needs), fraction=fraction)
                    runs += [
                        finetune_run(
                            ctx,
                            cell,
                            lr,
                            needs=needs,
                            config=facts.semi_config,
                            extra={"data.init_args.labeled_fraction": fraction},
                            epochs=epochs,
                            tag=f"f{num(fraction)}",
                        )
                        for lr in ctx.lrs
                    ]
    return runs


def _network(activation: str, pretrained: bool) -> str:
    return activation + (" + pre-training" if pretrained else "")


def markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    lines = []
    for dataset in datasets:
        reference = paper.SEMI.get(dataset, {})
        lines += dataset_heading(dataset) + [
            "Paper numbers are read off its figure (approximate).",
            "",
            "| labeled fraction | network | paper | ours | diff |",
            "|---|---|---|---|---|",
        ]
        fractions = sorted({c.fraction for c in by_cell if c.dataset == dataset and c.fraction is not None})
        for fraction in fractions:
            for activation in ACTIVATIONS:
                for pretrained in (False, True):
                    result = by_cell.get(Cell(dataset, activation, pretrained=pretrained, fraction=fraction))
                    theirs = reference.get((activation, pretrained), {}).get(fraction)
                    lines.append(
                        f"| {fraction:g} | {_network(activation, pretrained)} | {pct(theirs)} | "
                        f"{ours(result)} | {diff(value_of(result), theirs)} |"
                    )
        lines += [
            "",
            "Pre-training uses every training input (no labels); fine-tuning a seeded, class-balanced "
            "subset of the labels (`labeled_fraction`), for more epochs when the subset is small "
            "(min(E / f, cap x E) epochs; the run list gives each run's).",
        ]
        lines += [""] + claims_heading() + claims(by_cell, dataset, fractions) + [""]
    return lines


def claims(by_cell, dataset: str, fractions: list[float]) -> list[str]:
    def err(activation: str, pretrained: bool, fraction: float) -> float | None:
        return value_of(by_cell.get(Cell(dataset, activation, pretrained=pretrained, fraction=fraction)), test_error)

    if not fractions:
        return [claim("Pre-training helps with few labels.", None, "")]
    fewest, most = fractions[0], fractions[-1]
    lines = []
    for activation in ACTIVATIONS:
        pre, nopre = err(activation, True, fewest), err(activation, False, fewest)
        verdict = {
            "lower": "Supported.",
            "same": "Not supported (no difference beyond noise).",
            "higher": "Not supported (it hurts).",
            None: None,
        }[compare(dataset, pre, nopre)]
        lines.append(
            claim(
                f"With few labels, pre-training helps the {activation} network (paper on NORB, 4% "
                f"of the labels: {'38.2% vs 44.8%' if activation == 'rectifier' else '41.5% vs 44.6%'}).",
                verdict,
                f"Ours with {fewest:g} of the labels: {pct(pre)} with, {pct(nopre)} without.",
            )
        )
    pre, nopre = err("rectifier", True, most), err("rectifier", False, most)
    verdict = {
        "lower": "Not supported (it still helps beyond noise).",
        "same": "Supported.",
        "higher": "Not supported (it hurts).",
        None: None,
    }[compare(dataset, pre, nopre)]
    lines.append(
        claim(
            "With all labels, pre-training makes little difference to the rectifier network (paper: 16.4% both).",
            verdict,
            f"Ours with {most:g} of the labels: {pct(pre)} with, {pct(nopre)} without.",
        )
    )
    return lines


def plot(plt, records: dict[str, Record], datasets: list[str]):
    by_cell = cells(records)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        reference = paper.SEMI.get(dataset, {})
        for (activation, pretrained), color in COLORS.items():
            name = _network(activation, pretrained)
            points = sorted(
                (c.fraction, value_of(r, test_error))
                for c, r in by_cell.items()
                if (c.dataset, c.activation, c.pretrained) == (dataset, activation, pretrained)
                and c.fraction is not None
                and value_of(r, test_error) is not None
            )
            if points:
                ax.plot(*zip(*points), "o-", color=color, label=f"{name} (ours)")
            theirs = reference.get((activation, pretrained))
            if theirs:
                ax.plot(list(theirs), list(theirs.values()), "--", color=color, alpha=0.7, label=f"{name} (paper)")
        ax.set(
            xlabel="fraction of labeled training examples", ylabel="test error (%)", title=paper.DATASET_TITLES[dataset]
        )
        fractions = [c.fraction for c in by_cell if c.dataset == dataset and c.fraction]
        if fractions and max(fractions) / min(fractions) > 20:  # the few-labels end would be squashed
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def sweeps(specs: list[RunSpec], datasets: list[str]) -> list[Sweep]:
    files = []
    for dataset in datasets:
        title = f"Semi-supervised {paper.DATASET_TITLES[dataset]}"
        pre = [s for s in specs if s.dataset == dataset and s.phase == "pretrain"]
        fine = [s for s in specs if s.dataset == dataset and s.phase == "finetune"]
        about = (
            pretraining_about(title, pre, f"{dataset}_semi.yaml")
            + f"\nThese are {dataset}_pretrain.yaml's runs of the same activations, writing the same "
            "checkpoints: skip this sweep if you ran that one."
        )
        files.append(
            Sweep(
                f"{dataset}_semi_pretrain.yaml",
                f"{dataset} pre-training (semi-supervised, stage 1)",
                about,
                "semi_supervised",
                dataset,
                tuple(pre),
            )
        )
        fractions = ", ".join(f"{f:g}" for f in dict.fromkeys(s.cell.fraction for s in fine))
        about = (
            f"{title}, stage 2 of 2: {' and '.join(ACTIVATIONS)}, without and with pre-training, fine-tuned on "
            f"a labeled fraction of the training set ({fractions}) at each learning rate. Smaller fractions "
            "train for more epochs (the same number of steps, up to a cap), so fraction and trainer.max_epochs "
            "go together in the `config` fragment. The best validation error per (activation, pre-training, "
            "fraction) is its result.\n"
            f"Runs with pre-training start from {CHECKPOINTS}/{dataset}_<activation>.ckpt, made by stage 1 "
            f"({dataset}_semi_pretrain.yaml): run that sweep first."
        )
        files.append(
            Sweep(
                f"{dataset}_semi.yaml",
                f"{dataset} semi-supervised (labeled fraction x pre-training)",
                about,
                "semi_supervised",
                dataset,
                tuple(fine),
            )
        )
    return files


EXPERIMENT = Experiment(
    "semi_supervised",
    "Semi-supervised: test error against the labeled fraction",
    ("norb",),
    plan,
    markdown,
    sweeps,
    plot,
)
