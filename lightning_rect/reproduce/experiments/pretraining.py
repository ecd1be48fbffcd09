"""Pre-training that earns its place: variants of the pre-training and fine-tuning protocol on MNIST,
each fine-tuned with early stopping on ``val/err``, against a random start given the same
fine-tuning budget. Everything is chosen on validation; test errors are read, not used.

Every variant is fine-tuned at each of its learning rates, for at most ``MAX_EPOCHS`` epochs,
stopped when ``val/err`` has not improved for ``PATIENCE`` epochs; its best-validation checkpoint
is tested. ``SEEDED`` protocols are repeated with ``SEEDS`` (pre-training and fine-tuning both
reseeded): the report gives their mean and spread over three seeds. Each variant states its DAE
(epochs per layer, rescaling) and fine-tuning rate itself, so the configs' own values do not change
what a variant is. The plan lists the runs in the order they are worth training, so an interrupted
grid has its most telling runs first.

Why these variants, rates and seeds, with the numbers that decided them:
reproductions/pretraining/notes.md.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_rect.reproduce import paper
from lightning_rect.reproduce.budgets import DATASETS, PAPER_LRS, for_dataset
from lightning_rect.reproduce.experiments.base import Experiment
from lightning_rect.reproduce.plan import Cell, Context, RunSpec, early_stopping, finetune_run, pretrain_run
from lightning_rect.reproduce.report import cells, compare, dataset_heading, pct, test_error
from lightning_rect.reproduce.runner import Record, duration, finite
from lightning_rect.reproduce.sweeps import Sweep

#: Fine-tuning: at most this many epochs, stopped after ``PATIENCE`` epochs without a better val/err.
MAX_EPOCHS = 60
PATIENCE = 10
#: The pre-training learning rate (why this one and the rates below: the notes).
PRETRAIN_LR = 0.01
#: Fine-tuning rates searched when the budget asks for the paper's whole grid; a variant may name
#: its own rates instead (``Variant.lrs``).
NARROWED_LRS = (0.01, 0.03)
#: Protocols repeated with other seeds (variant tag -> fine-tuning lr; trained in this order), and the
#: seeds; the config's seed (0) is the first of the three.
SEEDED = {"dae10_rescale": 0.1, "random": 0.03, "dae30_rescale": 0.1, "dae10_l1pre": 0.03}
#: The protocol the seeds chose: the configs carry it, and Table 1 at the paper budget runs it.
CHOSEN = "dae10_l1pre"
SEEDS = (1, 2)
#: The test error (%) a pre-trained net should reach: within 0.05 points of the paper's 1.20%.
GOAL = 1.25


@dataclass(frozen=True)
class Variant:
    tag: str
    title: str
    pretraining: dict[str, Any] | None = None  # its DAE's settings; None: a random start
    finetuning: dict[str, Any] = field(default_factory=dict)
    epochs_per_layer: int = 10  # DAE epochs per hidden layer
    lrs: tuple[float, ...] = NARROWED_LRS  # its fine-tuning rates with the paper's grid, in training order

    @property
    def dae(self) -> str:
        """Name of its DAE ("" for the configured one): variants that differ only in fine-tuning share one."""
        parts = [f"e{self.epochs_per_layer}"] if self.epochs_per_layer != 10 else []
        return "_".join(parts + [key.rpartition(".")[2] for key in sorted(self.pretraining or {})])


RESCALE = {"model.init_args.rescale": True}
UNSCALED = {"model.init_args.rescale": False}
NO_L1 = {"model.init_args.l1": 0.0}

#: In report order; ``plan`` trains them in the order of ``TRAINING_ORDER``.
VARIANTS = (
    # the chosen protocol fine-tunes at 0.1, so the random start is given that rate too
    Variant("random", "random start (no pre-training)", lrs=(0.01, 0.03, 0.1)),
    Variant("dae10", "DAE as first configured (10 epochs per layer)", pretraining={}),
    # codes rescaled into [0, 1] are far smaller than unscaled ones, so a larger rate is tried too (the
    # authors' library fine-tunes its rescaled nets at 0.1)
    Variant(
        "dae10_rescale",
        "DAE with each layer rescaled to max 1 before the next",
        pretraining=RESCALE,
        lrs=(0.1, 0.01, 0.03),
    ),
    # the rescaled DAE was best at 0.1, then 0.03, then 0.01: its variants are fine-tuned at 0.1 only
    Variant(
        "dae30_rescale", "rescaled DAE with 30 epochs per layer", pretraining=RESCALE, epochs_per_layer=30, lrs=(0.1,)
    ),
    Variant(
        "dae10_rescale_l1pre",
        "rescaled DAE fine-tuned without L1 (L1 in pre-training only)",
        pretraining=RESCALE,
        finetuning=NO_L1,
        lrs=(0.1,),
    ),
    Variant("dae30", "DAE with 30 epochs per layer", pretraining={}, epochs_per_layer=30),
    Variant(
        "dae10_l1pre",
        "DAE as first configured, fine-tuned without L1 (L1 in pre-training only)",
        pretraining={},
        finetuning=NO_L1,
    ),
    # after the seeds chose dae10_l1pre, at its rate: more DAE epochs, and the authors' L1 weight (their
    # library sums a full 0.001 term per layer, where each layer's term weighs l1 / 3 here)
    Variant(
        "dae30_l1pre",
        "DAE with 30 epochs per layer, fine-tuned without L1",
        pretraining={},
        epochs_per_layer=30,
        finetuning=NO_L1,
        lrs=(0.03,),
    ),
    Variant(
        "dae10_l1x3_l1pre",
        "DAE with the authors' full L1 per layer (l1 0.003), fine-tuned without L1",
        pretraining={"model.init_args.l1": 0.003},
        finetuning=NO_L1,
        lrs=(0.03,),
    ),
)


def finetune_lrs(ctx: Context, variant: Variant) -> tuple[float | None, ...]:
    """The budget's rates, except that the paper's whole grid is narrowed to the variant's own."""
    return variant.lrs if ctx.budget.lrs == PAPER_LRS else ctx.lrs


def dae_settings(ctx: Context, dataset: str, variant: Variant, seed: int | None = None) -> dict[str, Any]:
    """The settings of a variant's DAE (it must have one); ``seed``: reseeded."""
    layers = len(ctx.config_value(f"{dataset}_pretrain.yaml", "model.init_args.hidden_sizes") or [0] * 3)
    return {
        **UNSCALED,
        **(variant.pretraining or {}),
        "model.init_args.epochs_per_layer": variant.epochs_per_layer,
        "trainer.max_epochs": variant.epochs_per_layer * layers,
        **_reseed(seed),
    }


def finetuning_settings(ctx: Context, dataset: str, variant: Variant, seed: int | None = None) -> dict[str, Any]:
    """The settings a variant fine-tunes with (besides its ``epochs``); ``seed``: reseeded."""
    return {**variant.finetuning, **early_stopping(ctx, DATASETS[dataset].config, PATIENCE), **_reseed(seed)}


def finetuning_epochs(ctx: Context, dataset: str) -> int:
    return for_dataset(ctx.budget.finetune_epochs, dataset) or MAX_EPOCHS


def _reseed(seed: int | None) -> dict[str, Any]:
    return {"seed_everything": seed} if seed is not None else {}


def variant_runs(
    ctx: Context, dataset: str, variant: Variant, lrs: tuple[float | None, ...], seed: int | None = None
) -> list[RunSpec]:
    """The variant's DAE (if any) and its fine-tuning runs at ``lrs``; ``seed``: both reseeded."""
    runs: list[RunSpec] = []
    needs: tuple[str, ...] = ()
    if variant.pretraining is not None:
        tag = "_".join(filter(None, [variant.dae, f"seed{seed}" if seed is not None else ""]))
        dae = pretrain_run(
            ctx,
            dataset,
            "rectifier",
            PRETRAIN_LR,
            extra=dae_settings(ctx, dataset, variant, seed),
            tag=tag,
            cell=Cell(dataset, "rectifier", phase="pretrain", variant=variant.dae or "configured", seed=seed),
        )
        runs.append(dae)
        needs = (dae.id,)
    cell = Cell(dataset, "rectifier", pretrained=bool(needs), variant=variant.tag, seed=seed)
    tag = variant.tag + (f"_seed{seed}" if seed is not None else "")
    runs += [
        finetune_run(
            ctx,
            cell,
            lr,
            needs=needs,
            extra=finetuning_settings(ctx, dataset, variant, seed),
            epochs=finetuning_epochs(ctx, dataset),
            tag=tag,
        )
        for lr in lrs
    ]
    return runs


VARIANT = {variant.tag: variant for variant in VARIANTS}

#: Training order: the variants that decide the protocol, then the repeats with other seeds, then
#: the variants the first ones made unlikely to win.
TRAINING_ORDER = (
    "random",
    "dae10",
    "dae10_rescale",
    "dae30_rescale",
    "dae10_rescale_l1pre",
    "seeds",
    "dae30",
    "dae10_l1pre",
    "dae30_l1pre",
    "dae10_l1x3_l1pre",
)


def plan(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    runs: dict[str, RunSpec] = {}
    for dataset in datasets:
        for step in TRAINING_ORDER:
            if step == "seeds":
                specs = [
                    spec
                    for tag, lr in SEEDED.items()
                    for seed in SEEDS
                    for spec in variant_runs(ctx, dataset, VARIANT[tag], (lr,), seed)
                ]
            else:
                specs = variant_runs(ctx, dataset, VARIANT[step], finetune_lrs(ctx, VARIANT[step]))
            for spec in specs:
                runs.setdefault(spec.id, spec)
    return list(runs.values())


# -- the report ----------------------------------------------------------------------------------------
def validation_curve(record: Record | None) -> list[tuple[int, float]]:
    """(epoch, val/err in percent) of a run, from its metrics.csv."""
    if record is None or record.log_dir is None:
        return []
    path = Path(record.log_dir) / "metrics.csv"
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return []
    curve = {}
    for row in rows:
        value, epoch = row.get("val/err"), row.get("epoch")
        if value and epoch:
            curve[int(float(epoch))] = 100 * float(value)
    return sorted(curve.items())


def _val(record: Record | None) -> float | None:
    value = record.result("best_val") if record is not None else None
    return 100 * value if finite(value) else None


def markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    lines = [
        "Fine-tuning of every variant: at most "
        f"{MAX_EPOCHS} epochs, early stopping on val/err with "
        f"patience {PATIENCE}, the best-validation checkpoint tested; learning rate chosen on validation among "
        "the rates listed per run below. Pre-training: the rectifier DAE of configs/mnist_pretrain.yaml at lr "
        f"{PRETRAIN_LR:g} (the rate the grid chose) with the variant's changes.",
        "",
        "Fine-tuning rates (with the paper's grid; other budgets use their own): "
        + "; ".join(f"{v.title}: {', '.join(f'{lr:g}' for lr in v.lrs)}" for v in VARIANTS)
        + " (why: the notes below).",
        "",
    ]
    for dataset in datasets:
        lines += dataset_heading(dataset)
        lines += [
            "| variant | validation error | test error | fine-tuning lr | best epoch (from 0) / epochs | "
            "fine-tuning time |",
            "|---|---|---|---|---|---|",
        ]
        results = {}
        for variant in VARIANTS:
            result = by_cell.get(
                Cell(dataset, "rectifier", pretrained=variant.pretraining is not None, variant=variant.tag)
            )
            chosen = results[variant.tag] = result.chosen if result is not None else None
            if chosen is None:
                lines.append(f"| {variant.title} | —{result.why_empty() if result else ''} | — | — | — | — |")
                continue
            res = chosen.results
            assert res is not None  # a cell's chosen run has finished
            lr = f"{chosen.spec.lr:g}" if chosen.spec.lr is not None else "—"
            time = duration(res["fit_seconds"]) if finite(res.get("fit_seconds")) else "—"
            lines.append(
                f"| {variant.title} | {pct(_val(chosen))} | {pct(test_error(chosen))} | {lr} | "
                f"{res.get('best_epoch')} / {res.get('epochs')} | {time} |"
            )
        lines += [""] + claims(dataset, results, by_cell) + [""] + seed_lines(dataset, by_cell) + [""]
    return lines


def repeats(dataset: str, tag: str, lr: float, by_cell: dict) -> list[Record]:
    """The finished runs of a seeded protocol: the grid's run at ``lr`` (the config's seed), then one per seed."""
    variant = VARIANT[tag]
    runs = []
    for seed in (None, *SEEDS):
        result = by_cell.get(
            Cell(dataset, "rectifier", pretrained=variant.pretraining is not None, variant=tag, seed=seed)
        )
        runs += [r for r in (result.runs if result else []) if r.finished and r.spec.lr == lr and _val(r) is not None]
    return runs


def spread(values: list[float]) -> str:
    """'mean ± standard deviation (min-max, n)' of percentages."""
    mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f}% ± {std:.2f} ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def seed_lines(dataset: str, by_cell: dict) -> list[str]:
    lines = [
        "#### Seeds",
        "",
        f"Each protocol again with seeds {', '.join(map(str, SEEDS))} (pre-training and "
        "fine-tuning reseeded) besides the config's seed 0: mean ± standard deviation (lowest-highest, runs).",
        "",
        "| protocol | fine-tuning lr | validation error | test error | seeds finished |",
        "|---|---|---|---|---|",
    ]
    means = {}
    for tag, lr in SEEDED.items():
        title = VARIANT[tag].title
        runs = repeats(dataset, tag, lr, by_cell)
        if not runs:
            lines.append(f"| {title} | {lr:g} | — | — | 0 of {1 + len(SEEDS)} |")
            continue
        tests = [error for r in runs if (error := test_error(r)) is not None]
        vals = [v for r in runs if (v := _val(r)) is not None]  # every run's: repeats keeps measured ones only
        means[tag] = sum(tests) / len(tests), len(tests), sum(vals) / len(runs)
        lines.append(f"| {title} | {lr:g} | {spread(vals)} | {spread(tests)} | {len(runs)} of {1 + len(SEEDS)} |")
    lines.append("")
    for tag, (mean, n, val) in means.items():
        if tag == "random":
            continue
        title = VARIANT[tag].title
        verdict = ("meets" if mean <= GOAL else "misses") + f" the goal of {GOAL}% or less"
        random = means.get("random")
        against = (
            f"; against the random start's {random[0]:.2f}% ({random[1]} seed(s)): {mean - random[0]:+.2f} "
            f"points (on validation {val - random[2]:+.2f})"
            if random
            else ""
        )
        lines.append(
            f"- {title}: mean test error {mean:.2f}% over {n} seed(s), which {verdict}{against}"
            + ("." if n == 1 + len(SEEDS) else " (not all seeds have finished).")
        )
    return lines


def chosen_protocol(results: dict[str, Record | None]) -> tuple[str, Record] | None:
    """The pre-training variant with the lowest validation error."""
    scored = [
        (tag, r, val)
        for tag, r in results.items()
        if tag != "random" and r is not None and (val := _val(r)) is not None
    ]
    best = min(scored, key=lambda item: item[2]) if scored else None
    return (best[0], best[1]) if best is not None else None


def claims(dataset: str, results: dict[str, Record | None], by_cell: dict) -> list[str]:
    lines = ["#### Chosen on validation", ""]
    chosen = chosen_protocol(results)
    random = results.get("random")
    if chosen is None:
        return lines + ["No pre-training variant has finished yet.", ""]
    tag, record = chosen
    title = VARIANT[tag].title
    target = paper.TABLE1[("rectifier", True)].get(dataset)
    lines.append(
        f"- Chosen protocol: **{title}** at fine-tuning lr {record.spec.lr:g}: validation "
        f"{pct(_val(record))}, test {pct(test_error(record))} (paper, with pre-training: {pct(target)}; "
        f"goal: {GOAL}% or less)."
    )
    lr = record.spec.lr
    seeds = len(repeats(dataset, tag, lr, by_cell)) if lr is not None and SEEDED.get(tag) == lr else 1
    if seeds < 1 + len(SEEDS):
        lines.append(
            f"- Chosen on {seeds} seed(s) of {1 + len(SEEDS)}: one seed's validation error moves by about "
            "0.1 point (Seeds below), so its repeats still to run decide."
        )
    if random is not None and _val(random) is not None:
        verdict = compare(dataset, _val(record), _val(random))
        assert verdict is not None  # both are measured (chosen_protocol scored the chosen one)
        words = {
            "lower": "beats the random start beyond noise",
            "same": "is within noise of the random start",
            "higher": "is worse than the random start",
        }[verdict]
        lines.append(
            f"- On validation it {words}: {pct(_val(record))} against {pct(_val(random))} "
            f"(random start, lr {random.spec.lr:g}; test {pct(test_error(random))})."
        )
    return lines


def plot(plt, records: dict[str, Record], datasets: list[str]):
    by_cell = cells(records)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for variant in VARIANTS:
            result = by_cell.get(
                Cell(dataset, "rectifier", pretrained=variant.pretraining is not None, variant=variant.tag)
            )
            chosen = result.chosen if result is not None else None
            curve = validation_curve(chosen)
            if curve and chosen is not None:  # (a curve comes from a chosen run)
                lr = chosen.spec.lr
                ax.plot(
                    [e for e, _ in curve],
                    [v for _, v in curve],
                    marker=".",
                    label=f"{variant.title} (lr {lr:g})",
                    linestyle="--" if variant.tag == "random" else "-",
                )
        target = paper.TABLE1[("rectifier", True)].get(dataset)
        if target is not None:
            ax.axhline(
                target, color="grey", linewidth=0.8, linestyle=":", label=f"paper, with pre-training ({target}%)"
            )
        ax.set_title(paper.DATASET_TITLES[dataset])
        ax.set_xlabel("fine-tuning epoch")
        ax.set_ylabel("validation error (%)")
        top = max((v for line in ax.get_lines() for v in line.get_ydata()), default=3.0)
        ax.set_ylim(bottom=max(0.0, (target or 1.0) - 0.3), top=min(top, 3.0) if math.isfinite(top) else 3.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def sweeps(specs: list[RunSpec], datasets: list[str]) -> list[Sweep]:
    return []  # an investigation, not one of the paper's grids


EXPERIMENT = Experiment(
    "pretraining",
    "Pre-training that earns its place: protocol variants on MNIST",
    ("mnist",),
    plan,
    markdown,
    sweeps,
    plot,
)
