"""``Experiment``: what each module of ``experiments/`` provides, one table or figure of the paper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning_rect.reproduce.plan import Context, RunSpec
from lightning_rect.reproduce.runner import Record
from lightning_rect.reproduce.sweeps import Sweep


@dataclass(frozen=True)
class Experiment:
    """One of the paper's tables or figures.

    Args:
        name: the ``reproduce`` argument, also the report's file name (``<name>.md``, ``<name>.png``).
        title: the report's heading.
        default_datasets: the paper's data sets for it.
        plan: every run, for a budget and data sets.
        markdown: the paper's numbers beside ours, from the finished records.
        sweeps: the plan's runs as W&B sweep files.
        plot: draws the figure (``plot(plt, records, datasets)`` -> Figure); None: no figure.
    """

    name: str
    title: str
    default_datasets: tuple[str, ...]
    plan: Callable[[Context, list[str]], list[RunSpec]]
    markdown: Callable[[dict[str, Record], list[str]], list[str]]
    sweeps: Callable[[list[RunSpec], list[str]], list[Sweep]]
    plot: Callable[[Any, dict[str, Record], list[str]], Any] | None = None

    @property
    def has_figure(self) -> bool:
        return self.plot is not None
