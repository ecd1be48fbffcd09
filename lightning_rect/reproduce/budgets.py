"""How much training each budget buys; the data sets ``reproduce`` runs (from ``lightning_rect.reproduce.catalog``).

Everything that changes between ``--budget tiny``, ``small`` and ``paper`` is in ``BUDGETS`` below,
so the cost of a reproduction can be read (and changed) in one place. ``None`` means "as the
config file says": the ``paper`` budget runs the configs as written, plus the learning-rate search.

What each budget trains is in its entry of ``BUDGETS``; how long that takes on this project's
machines is not written here, where it would go stale: each report under ``reproductions/``
states the training time of its runs, and ``reproductions/README.md`` ("Budgets") gives the
expected time per data set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_rect.grid import PAPER_LRS  # the one definition of the paper's grid
from lightning_rect.reproduce.catalog import CATALOG, DataSet

#: The paper's softplus sharpness values a; ``math.inf`` stands for the rectifier.
PAPER_SHARPNESS = (1.0, 1.3, 2.0, 3.0, 6.0, math.inf)
#: The paper's labeled fractions (semi-supervised NORB figure).
PAPER_FRACTIONS = (0.04, 0.21, 0.43, 0.64, 1.0)
#: Activations that carry the L1 penalty in the reproductions. The paper states the penalty with the
#: rectifier networks' settings, so rectifier-only is the likelier reading
#: (docs/paper.md#what-the-paper-leaves-open); for softplus, which never outputs 0, it would be a
#: constant push towards the flat region, not a sparsity penalty. Every
#: other activation runs with l1 = 0 in both phases (reproductions/protocol measures tanh and
#: softplus with and without it).
L1_ACTIVATIONS = ("rectifier",)

#: The data sets ``reproduce`` runs: the paper's image benchmarks of the one table of data sets.
DATASETS: dict[str, DataSet] = {name: facts for name, facts in CATALOG.items() if facts.reproduced}


@dataclass(frozen=True)
class Budget:
    """How much training one reproduction gets. Per-data-set mappings fall back on their ``"*"`` entry.

    Args:
        finetune_epochs: supervised epochs (``trainer.max_epochs``); None: the config's.
        pretrain_epochs_per_layer: DAE epochs per hidden layer; None: the config's.
        lrs: learning rates tried for every run, the one with the best validation score kept
            (fine-tuning: val/err; pre-training: val/recon); None: the config's lr, no search.
        trainer: extra ``trainer.*`` settings (both phases), e.g. ``limit_train_batches``.
        data: extra ``data.init_args.*`` settings for fine-tuning.
        pretrain_data: extra ``data.init_args.*`` settings for pre-training.
        hidden_sizes: replaces the configs' layer sizes (``tiny`` only); None: the config's.
        l1_grid: L1 coefficients of ``l1_sweep`` (the paper: 0 to 0.01).
        sharpness: softplus sharpness values a of ``sharpness`` (``math.inf``: rectifier).
        fractions: labeled fractions of ``semi_supervised``.
        pretrain_lrs: learning rates of the pre-training runs when they differ from ``lrs``
            (``reproduce --pretrain-lrs``); None: ``lrs``.
        phase_lrs: per data set, the rates Table 1 searches in each phase (``"pretrain"``,
            ``"finetune"``) where the grid budget's evidence narrowed the paper's grid
            (why: reproductions/table1/notes.md); dropped when ``--lrs`` / ``--pretrain-lrs`` are given.
        semi_epoch_cap: with a labeled fraction f, fine-tuning runs ``min(E / f, cap * E)`` epochs
            (E = ``finetune_epochs``), so small fractions are not starved of steps.
    """

    name: str
    summary: str
    finetune_epochs: Mapping[str, int | None]
    pretrain_epochs_per_layer: Mapping[str, int | None]
    lrs: tuple[float, ...] | None
    trainer: Mapping[str, Mapping[str, Any]]
    data: Mapping[str, Mapping[str, Any]]
    pretrain_data: Mapping[str, Mapping[str, Any]]
    hidden_sizes: Mapping[str, list[int]] | None
    l1_grid: tuple[float, ...]
    sharpness: tuple[float, ...]
    fractions: tuple[float, ...]
    semi_epoch_cap: int
    pretrain_lrs: tuple[float, ...] | None = None
    phase_lrs: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)


def for_dataset(mapping: Mapping[str, Any] | None, dataset: str, default: Any = None) -> Any:
    """``mapping[dataset]``, else ``mapping["*"]``, else ``default``."""
    if mapping is None:
        return default
    return mapping.get(dataset, mapping.get("*", default))


# The budgets, side by side. Keys of per-data-set mappings: a data set name or "*" (any other).
BUDGETS: dict[str, Budget] = {
    # Seconds per run, on the bundled digits: proves the pipeline end to end (the tests), says
    # little about accuracy. Tiny layers, one epoch (20 batches, except on the small digits set).
    "tiny": Budget(
        name="tiny",
        summary="pipeline check: 1 epoch (at most 20 batches; digits: all), layers of 32 units, "
        "no learning-rate search",
        finetune_epochs={"*": 1},
        pretrain_epochs_per_layer={"*": 1},
        lrs=None,
        trainer={
            "*": {
                "limit_train_batches": 20,
                "limit_val_batches": 2,
                "limit_test_batches": 2,
                "num_sanity_val_steps": 0,
            },
            # the whole of the small digits set (120 batches) still takes about a second
            "digits": {"num_sanity_val_steps": 0},
            "nistp": {
                "limit_train_batches": 20,
                "limit_val_batches": 2,
                "limit_test_batches": 2,
                "num_sanity_val_steps": 0,
                "val_check_interval": 1.0,
            },
        },
        data={"nistp": {"train_size": 1000, "val_size": 200, "test_size": 200}},
        pretrain_data={"nistp": {"train_size": 1000, "val_size": 200, "test_size": 200}},
        hidden_sizes={"*": [32, 32, 32], "norb": [64, 32]},
        l1_grid=(0.0, 0.001, 0.01),
        sharpness=(1.0, 3.0, math.inf),
        fractions=(0.21, 1.0),
        semi_epoch_cap=1,
    ),
    # Faithful protocol (paper architectures, L1 0.001, batch 10, pre-training then fine-tuning,
    # selection on validation), shortened to about an hour per data set on 2 CPU cores: few epochs,
    # the configs' learning rates instead of the search (MNIST's 0.03 is not in the paper's grid;
    # the grid budget searches it).
    "small": Budget(
        name="small",
        summary="paper architectures, 1 pre-training epoch per layer, few fine-tuning epochs, config learning rates",
        finetune_epochs={"*": 10, "cifar10": 6, "norb": 4, "nistp": 1},
        # digits: 120 steps per epoch; one epoch leaves a rectifier DAE's top layer dead
        pretrain_epochs_per_layer={"*": 1, "digits": 5},
        lrs=None,
        trainer={"norb": {"limit_train_batches": 0.1, "limit_val_batches": 0.2}, "nistp": {"val_check_interval": 5000}},
        data={"nistp": {"train_size": 300_000, "val_size": 10_000}},
        pretrain_data={"nistp": {"train_size": 100_000, "val_size": 10_000}},
        hidden_sizes=None,
        l1_grid=(0.0, 0.0001, 0.0003, 0.001, 0.002, 0.003, 0.005, 0.01),
        sharpness=PAPER_SHARPNESS,
        fractions=PAPER_FRACTIONS,
        semi_epoch_cap=4,
    ),
    # The paper's learning-rate grid in both phases, with short training, to fit an afternoon on
    # 2 CPU cores (MNIST Table 1: 12 pre-training and 24 fine-tuning runs; reproductions/table1/grid has
    # the time they took): selection on validation among the paper's rates instead of the configs'
    # (0.03 is not in the grid).
    "grid": Budget(
        name="grid",
        summary="paper architectures and learning-rate grid {0.1, 0.01, 0.001, 0.0001} in both phases, "
        "1 pre-training epoch per layer, 4 fine-tuning epochs",
        finetune_epochs={"*": 4, "norb": 2, "nistp": 1},
        pretrain_epochs_per_layer={"*": 1},
        lrs=PAPER_LRS,
        trainer={"norb": {"limit_train_batches": 0.1, "limit_val_batches": 0.2}, "nistp": {"val_check_interval": 5000}},
        data={"nistp": {"train_size": 300_000, "val_size": 10_000}},
        pretrain_data={"nistp": {"train_size": 100_000, "val_size": 10_000}},
        hidden_sizes=None,
        l1_grid=(0.0, 0.0001, 0.0003, 0.001, 0.003, 0.01),
        sharpness=PAPER_SHARPNESS,
        # the few-labels regime on MNIST: 250, 500 and 2500 labels, and all 50k
        fractions=(0.005, 0.01, 0.05, 1.0),
        semi_epoch_cap=6,
    ),
    # The full protocol: the configs as written (epochs, data sizes) and the paper's learning-rate
    # grid for every run, in both phases. Meant for a GPU, or split over machines (--shard).
    "paper": Budget(
        name="paper",
        summary="configs as written (MNIST: fine-tuning at most 60 epochs, early stopping on val/err with "
        "patience 10), learning rates chosen on validation from "
        "{0.1, 0.01, 0.001, 0.0001} (MNIST's Table 1: narrowed by the grid budget's evidence, 0.03 added)",
        finetune_epochs={"*": None},
        pretrain_epochs_per_layer={"*": None},
        lrs=PAPER_LRS,
        trainer={},
        data={},
        pretrain_data={},
        hidden_sizes=None,
        l1_grid=(0.0, 0.0001, 0.0002, 0.0003, 0.0005, 0.0007, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.007, 0.01),
        sharpness=PAPER_SHARPNESS,
        fractions=PAPER_FRACTIONS,
        semi_epoch_cap=10,
        # MNIST: configs/mnist*.yaml carry the protocol of reproductions/pretraining (fine-tuning
        # stopped after 10 epochs without a better val/err; Table 1 keeps its own DAE); the grid
        # narrowed by the grid budget's evidence, and 0.03 (the random start's best there) added
        phase_lrs={"mnist": {"pretrain": (0.01,), "finetune": (0.1, 0.03, 0.01)}},
    ),
}
