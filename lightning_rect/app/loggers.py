"""``CSVLogger``: Lightning's, except that a new run claims its folder atomically and a resume keeps
the history. Same arguments; the configs name it.

Lightning's picks ``version_N`` by listing the folders (two fits started together both take
``version_0``); this one claims it with ``mkdir``, which one process alone wins. Lightning's writer
deletes ``metrics.csv`` when it starts; this one reads the rows first, and on a resume
(``continue_history``) logs again those up to the resumed checkpoint's step, through Lightning's
writer. Each row is written as it is logged, so a kill loses none. Rows that are this run's own (its
folder was claimed by it, or ``own_rows`` was set) are kept when a writer starts: under ``ddp_spawn``
the test after the fit runs in new processes, with a new writer, which would otherwise delete the fit's.
"""

from __future__ import annotations

import csv
import os
import warnings
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from lightning_rect.files import storage_error
from lightning_rect.lightning_attrs import process_rank


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that claims a new ``version_N`` atomically and whose run
    history survives ``--ckpt_path last``.

    ``continue_history(step)`` (called by the CLI's resume callback when a fit restores a checkpoint)
    keeps the earlier rows logged up to ``step``; without it a run starts a new ``metrics.csv``, as
    Lightning's does. ``claimed`` is True once this logger made its folder. ``own_rows``: the rows already
    in the folder's ``metrics.csv`` are this run's, kept when a writer starts (always so in a folder it claimed).
    """

    def __init__(
        self,
        save_dir: Any,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(
            save_dir=save_dir,
            name=name,
            version=version,
            prefix=prefix,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
        )
        self._fixed = version is not None
        self._claimed_version: int | str | None = None
        self.claimed = False
        self.own_rows = False
        self._earlier: list[dict[str, str]] | None = None  # the rows on disk before the writer started

    @property
    def version(self) -> int | str:
        """The given version, or the next free ``version_N``, made here (on rank 0) so no other process gets it."""
        if self._claimed_version is None:
            version = super().version
            if not self._fixed and process_rank() == 0 and "://" not in self.root_dir:
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
    def experiment(self) -> ExperimentWriter:
        if self._earlier is None:  # first call: read the rows before Lightning's writer deletes the file
            self._earlier = whole_rows(os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE))
            with warnings.catch_warnings():  # "Previous log files ... will be deleted": not the history
                warnings.filterwarnings("ignore", message="Experiment logs directory")
                writer = super().experiment
            if (self.claimed or self.own_rows) and self._earlier:  # this run's rows, from another process of it
                writer.metrics[:0] = [{k: v for k, v in row.items() if v != ""} for row in self._earlier]
                self._earlier = []
                self.save()
            return writer
        return super().experiment

    @rank_zero_only
    def continue_history(self, step: int) -> None:
        """Resume: log again the earlier rows of steps <= ``step`` (those after it are logged again by the fit)."""
        writer = self.experiment
        kept = [
            {k: v for k, v in row.items() if v != ""} for row in self._earlier or [] if int(float(row["step"])) <= step
        ]
        writer.metrics[:0] = kept
        self._earlier = []
        self.save()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        try:
            self.save()  # every row on disk as soon as it is logged: a kill loses none
        except OSError as err:
            raise storage_error(
                os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE),
                err,
                "write the run elsewhere (--trainer.logger.init_args.save_dir=...)",
            ) from None


def claim_run_folder(root: str | os.PathLike) -> str:
    """A new ``root/version_N`` (one past the highest there), made here: ``mkdir``, which one process alone
    wins, as ``CSVLogger`` claims its version. For a run without a logger (``trainer.logger=false``)."""
    existing = (
        [
            int(d.name.removeprefix("version_"))
            for d in os.scandir(os.fspath(root))
            if d.is_dir() and d.name.startswith("version_") and d.name.removeprefix("version_").isdigit()
        ]
        if os.path.isdir(root)
        else []
    )
    version = max(existing, default=-1) + 1
    while True:
        try:
            os.makedirs(os.path.join(root, f"version_{version}"))
            return os.path.join(root, f"version_{version}")
        except FileExistsError:
            version += 1


def whole_rows(path: str) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` with a step, without a row cut off by a kill (too few or many fields)."""
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError:
        return []
    whole = []
    for row in rows:
        try:
            if None not in row and None not in row.values():
                float(row.get("step", ""))
                whole.append(row)
        except ValueError:
            continue
    return whole
