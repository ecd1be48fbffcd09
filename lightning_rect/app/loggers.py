"""``CSVLogger``: Lightning's, except that a new run claims its folder atomically and a resume keeps
the history. Same arguments; the configs name it.

Lightning's picks ``version_N`` by listing the folders (two fits started together both take
``version_0``); this one claims it with ``mkdir``, which one process alone wins. Lightning's writer
deletes ``metrics.csv`` on a resume; this one's (``RunHistory``) keeps the rows up to the resumed
checkpoint's step, drops those logged after it (they are logged again), and writes each row as it
is logged (a kill loses none).
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from lightning_rect.files import atomic_write


class RunHistory:
    """The writer behind ``CSVLogger.experiment``: ``metrics.csv`` and ``hparams.yaml`` of one run folder."""

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []  # logged, not yet on disk
        self.metrics_keys: list[str] = []
        self.hparams: dict[str, Any] = {}
        self.keep_until: int | None = None  # on a resume: the resumed checkpoint's step
        self._written = False  # whether this process has written metrics.csv yet

    def continue_after(self, step: int) -> None:
        """Resume: keep the rows of ``metrics.csv`` logged at steps <= ``step``, append after them."""
        if not self._written:
            self.keep_until = int(step)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        if step is None:
            step = len(self.metrics)
        row = {k: v.item() if isinstance(v, Tensor) else v for k, v in metrics_dict.items()}
        row["step"] = step
        self.metrics.append(row)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        os.makedirs(self.log_dir, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def save(self) -> None:
        if not self.metrics:
            return
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        if not self._written:
            earlier = self.earlier_rows() if self.keep_until is not None else []
            self.metrics_keys = sorted(set(self.metrics_keys).union(new_keys, *earlier))
            self._rewrite(earlier + self.metrics)
            self._written = True
        elif new_keys:
            self.metrics_keys = sorted(set(self.metrics_keys) | new_keys)
            self._rewrite(self._read_rows() + self.metrics)
        else:
            with open(self.metrics_file_path, "a", newline="") as file:
                csv.DictWriter(file, fieldnames=self.metrics_keys).writerows(self.metrics)
        self.metrics = []

    def earlier_rows(self) -> list[dict[str, str]]:
        """Whole rows of the existing ``metrics.csv`` with ``step <= keep_until`` (a row cut off by a kill is dropped)."""
        kept = []
        for row in self._read_rows():
            if None in row or None in row.values():  # too many or too few fields: a partial line
                continue
            try:
                step = int(float(row.get("step", "")))
            except ValueError:
                continue
            if self.keep_until is not None and step <= self.keep_until:
                kept.append(row)
        return kept

    def _read_rows(self) -> list[dict[str, str]]:
        try:
            with open(self.metrics_file_path, newline="") as file:
                return list(csv.DictReader(file))
        except FileNotFoundError:
            return []

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with atomic_write(self.metrics_file_path, "w") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that claims a new ``version_N`` atomically and whose run
    history survives ``--ckpt_path last``.

    ``continue_history(step)`` (called by the CLI's resume callback when a fit restores a
    checkpoint) makes the first write keep the earlier rows up to ``step``; without it a run starts
    a new ``metrics.csv``, as Lightning's does. ``claimed`` is True once this logger made its folder.
    """

    def __init__(self, save_dir: Any, name: str | None = "lightning_logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        self._run_history: RunHistory | None = None
        self._fixed = version is not None
        self._claimed_version: int | str | None = None
        self.claimed = False

    @property
    def version(self) -> int | str:
        """The given version, or the next free ``version_N``, made here (on rank 0) so no other process gets it."""
        if self._claimed_version is None:
            version = super().version
            if not self._fixed and rank_zero_only.rank == 0 and "://" not in self.root_dir:
                while True:
                    try:
                        os.makedirs(os.path.join(self.root_dir, f"version_{version}"))
                        break
                    except FileExistsError:
                        version = int(version) + 1
                self.claimed = True
            self._claimed_version = version
        return self._claimed_version

    @property
    @rank_zero_experiment
    def experiment(self) -> RunHistory:
        if self._run_history is None:
            self._run_history = RunHistory(self.log_dir)
        return self._run_history

    @rank_zero_only
    def continue_history(self, step: int) -> None:
        self.experiment.continue_after(step)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self.save()  # every row on disk as soon as it is logged: a kill loses none

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run_history is not None:
            self.save()
