"""The protocol choices the paper leaves open, measured side by side
(docs/paper.md#what-the-paper-leaves-open): the L1 penalty on tanh and softplus networks (the
reproductions apply it to the rectifier only, ``budgets.L1_ACTIVATIONS``), and the sign flip of
the paper's image experiments (off in our configs), without and with pre-training (with it, the
DAE's layers 2 and up reconstruct |h|)."""

from __future__ import annotations

from lightning_rect.reproduce.experiments.base import Experiment
from lightning_rect.reproduce.plan import Cell, Context, RunSpec, finetune_run, pretrain_run
from lightning_rect.reproduce.report import cells, compare, dataset_heading, ours, pct, sparsity, test_error, value_of
from lightning_rect.reproduce.runner import Record
from lightning_rect.reproduce.sweeps import Sweep

#: The paper's L1 coefficient, tried on the activations the reproductions leave without it.
PAPER_L1 = 0.001
SIGN_FLIP = {"model.init_args.sign_flip": True}


def plan(ctx: Context, datasets: list[str]) -> list[RunSpec]:
    runs: list[RunSpec] = []
    for dataset in datasets:
        for activation in ("tanh", "softplus"):
            for l1 in (0.0, PAPER_L1):
                runs += [
                    finetune_run(
                        ctx, Cell(dataset, activation, l1=l1), lr, extra={"model.init_args.l1": l1}, tag=f"l1{l1:g}"
                    )
                    for lr in ctx.lrs
                ]
        for flip in (False, True):
            extra, tag = (SIGN_FLIP, "flip") if flip else ({}, "")
            pre = [
                pretrain_run(
                    ctx,
                    dataset,
                    "rectifier",
                    lr,
                    extra=extra,
                    tag=tag,
                    cell=Cell(dataset, "rectifier", phase="pretrain", sign_flip=flip),
                )
                for lr in ctx.pretrain_lrs
            ]
            runs += pre
            for needs in ((), tuple(r.id for r in pre)):
                cell = Cell(dataset, "rectifier", pretrained=bool(needs), sign_flip=flip)
                runs += [finetune_run(ctx, cell, lr, needs=needs, extra=extra, tag=tag) for lr in ctx.lrs]
    return runs


def _row(label: str, setting: str, result) -> str:
    chosen = result.chosen if result is not None else None
    lr = f"{chosen.spec.lr:g}" if chosen is not None and chosen.spec.lr is not None else "—"
    return f"| {label} | {setting} | {ours(result)} | {ours(result, sparsity, 1)} | {lr} |"


def markdown(records: dict[str, Record], datasets: list[str]) -> list[str]:
    by_cell = cells(records)
    lines = []
    for dataset in datasets:
        lines += dataset_heading(dataset)
        lines += ["| network | setting | test error | exact sparsity | learning rate |", "|---|---|---|---|---|"]
        for activation in ("tanh", "softplus"):
            for l1 in (0.0, PAPER_L1):
                setting = "no L1 (our default)" if l1 == 0 else f"L1 {l1:g} (the rectifier's)"
                lines.append(
                    _row(f"{activation}, without pre-training", setting, by_cell.get(Cell(dataset, activation, l1=l1)))
                )
        for pretrained in (False, True):
            for flip in (False, True):
                setting = (
                    "sign flip on" + (" (the DAE reconstructs abs(h))" if pretrained else "")
                    if flip
                    else "sign flip off (our default)"
                )
                lines.append(
                    _row(
                        f"rectifier, {'with' if pretrained else 'without'} pre-training",
                        setting,
                        by_cell.get(Cell(dataset, "rectifier", pretrained=pretrained, sign_flip=flip)),
                    )
                )
        lines += [
            "",
            "#### What each choice changes",
            "",
            '"Same": within two standard deviations of the difference of two test errors (binomial noise).',
            "",
        ]
        pairs = [
            (f"L1 on the {a} network", Cell(dataset, a, l1=PAPER_L1), Cell(dataset, a, l1=0.0))
            for a in ("tanh", "softplus")
        ]
        pairs += [
            (
                f"Sign flip, rectifier {'with' if p else 'without'} pre-training",
                Cell(dataset, "rectifier", pretrained=p, sign_flip=True),
                Cell(dataset, "rectifier", pretrained=p),
            )
            for p in (False, True)
        ]
        for label, on, off in pairs:
            a, b = value_of(by_cell.get(on), test_error), value_of(by_cell.get(off), test_error)
            verdict = compare(dataset, a, b)
            effect = {
                "lower": "lowers the error",
                "higher": "raises the error",
                "same": "changes the error within noise",
                None: "not measured yet",
            }[verdict]
            sparse_on, sparse_off = value_of(by_cell.get(on), sparsity), value_of(by_cell.get(off), sparsity)
            lines.append(
                f"- {label} {effect}: {pct(a)} against {pct(b)} without it; exact zeros "
                f"{pct(sparse_on, 1)} against {pct(sparse_off, 1)}."
            )
        lines.append("")
    return lines


def sweeps(specs: list[RunSpec], datasets: list[str]) -> list[Sweep]:
    return []  # a check of choices, not one of the paper's figures: run it with reproduce


EXPERIMENT = Experiment(
    "protocol", "Protocol choices the paper leaves open: L1 scope and sign flip", ("mnist",), plan, markdown, sweeps
)
