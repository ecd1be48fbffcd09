"""Firing-rate export of ``SparsityMonitor``: histograms, loggers that take them, ``firing_rates.json``.

Firing-rate distributions (``SparsityMonitor(histograms=True)``, the default). At the end of every
validation epoch and of the test, each layer's firing rates become a histogram
(``FiringRateHistogram``: ``HISTOGRAM_BINS`` equal bins over [0, 1], a unit firing on exactly
``b/bins`` of the examples falls in bin ``b``, rate 1 in the last; computed from the exact integer
counts, so it is the same on every machine and under DDP, where the counts are already summed over
ranks). It is kept in ``firing_rate_histograms[stage][layer]`` and, on rank 0:

- logged as ``<stage>/firing_rate/<layer>`` to the loggers that take histograms: Lightning's
  ``WandbLogger`` (a ``wandb.Histogram`` through ``logger.experiment.log``, with
  ``trainer/global_step``) and ``TensorBoardLogger`` (``add_histogram_raw`` with the same bins and
  counts); other loggers (the CSV logger) get nothing;
- saved as ``firing_rates.json`` (``RATES_FILE``) in the run's folder (``run_folder``) when the
  trainer has a logger (never in the working folder of a logger-less trainer), for the summary
  figure (``lightning_rect.app.plots``). One entry per stage, rewritten at each of its epochs
  (``val``: the last validation epoch; ``test``: the tested checkpoint)::

      {"format": 1, "bins": 20,
       "val": {"epoch": 7, "global_step": 960,
               "layers": {"layer_1": {"rows": 300, "nonzero": [12, 0, 300, ...],
                                      "histogram": [40, 3, ...], "dead": 2}},
               "monitors": {"": ["layer_1"]}},
       "test": {...}}

  ``nonzero[u] / rows`` is unit ``u``'s firing rate; ``histogram`` includes the ``dead`` units
  (rate exactly 0) in bin 0. About 6 bytes per unit (18 kB for the paper's 3 x 1000 network).
  Several monitors on one Trainer share the file: an entry holds the layers of every monitor that
  reported that evaluation (a named monitor's as ``<name>/<layer>``); ``monitors`` says which
  monitor (by ``name``, ``""`` for none) wrote which layers, so each replaces only its own.

None of it touches the training step: it runs once per validation epoch and once per test, on
numbers the epoch end has already gathered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from lightning_rect.files import write_atomically
from lightning_rect.lightning_attrs import trainer_fast_dev_run

#: Bins of the firing-rate histograms: equal widths over [0, 1].
HISTOGRAM_BINS = 20
#: The file, in the run's folder, that keeps the last firing rates of validation and test.
RATES_FILE = "firing_rates.json"


@dataclass(frozen=True)
class FiringRateHistogram:
    """How many units of a layer fire at each rate: ``counts[b]`` units have a firing rate in
    ``[b / bins, (b + 1) / bins)`` (rate 1 in the last bin); ``dead`` of them (all in bin 0) never
    fired. ``units`` is ``sum(counts)``."""

    counts: tuple[int, ...]
    dead: int

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def units(self) -> int:
        return sum(self.counts)

    @property
    def edges(self) -> list[float]:
        return [b / self.bins for b in range(self.bins + 1)]


def firing_rate_histogram(nonzero: torch.Tensor, rows: float, bins: int = HISTOGRAM_BINS) -> FiringRateHistogram:
    """The histogram of firing rates ``nonzero / rows`` (per-unit non-zero outputs over outputs per
    unit), binned from the exact integer counts: a rate of exactly ``b / bins`` lands in bin ``b``."""
    nonzero = nonzero.detach().double().cpu().flatten()
    index = torch.floor(nonzero * bins / max(float(rows), 1.0)).long().clamp_(0, bins - 1)
    counts = torch.bincount(index, minlength=bins)
    return FiringRateHistogram(tuple(int(c) for c in counts.tolist()), int((nonzero == 0).sum()))


def log_firing_rate_histograms(
    loggers: Sequence[Logger],
    stage: str,
    histograms: Mapping[str, FiringRateHistogram],
    counts: Mapping[str, tuple[torch.Tensor, float]],
    step: int,
) -> None:
    """``<stage>/firing_rate/<layer>`` to every logger that takes histograms (W&B, TensorBoard);
    the others are skipped. Call on rank 0."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            payload = {
                f"{stage}/firing_rate/{layer}": wandb.Histogram(
                    np_histogram=(np.asarray(h.counts), np.asarray(h.edges))
                )
                for layer, h in histograms.items()
            }
            logger.experiment.log({**payload, "trainer/global_step": step})
        elif isinstance(logger, TensorBoardLogger):
            for layer, h in histograms.items():
                nonzero, rows = counts[layer]
                rates = nonzero.double() / max(rows, 1.0)
                logger.experiment.add_histogram_raw(
                    f"{stage}/firing_rate/{layer}",
                    min=float(rates.min()),
                    max=float(rates.max()),
                    num=h.units,
                    sum=float(rates.sum()),
                    sum_squares=float((rates * rates).sum()),
                    bucket_limits=h.edges[1:],
                    bucket_counts=list(h.counts),
                    global_step=step,
                )


def run_folder(trainer: Trainer) -> str | None:
    """The folder of the trainer's run (its first logger's), or None without a logger and under
    ``fast_dev_run`` (which writes nothing). Call it on every process: it is rank 0's answer, broadcast.

    A TensorBoard or CSV logger's ``log_dir`` (``trainer.log_dir``). Any other logger has no
    ``log_dir``, and ``trainer.log_dir`` is then its ``save_dir``, the root that every run shares
    (MLflow's file store ``mlruns/``, W&B's ``save_dir``): so ``<save_dir>/<name>/<version>``, where
    ``ModelCheckpoint`` puts that run's ``checkpoints/``; under MLflow's file store that is the run's
    own folder (``mlruns/<experiment id>/<run id>``). A logger with no local ``save_dir`` (a remote
    tracking server) gets the same under ``trainer.default_root_dir``.
    """
    if not trainer.loggers or trainer_fast_dev_run(trainer):  # fast_dev_run's stand-in logger has no run folder
        return None
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return trainer.log_dir
    folder = None
    if trainer.is_global_zero:  # other ranks' loggers have no run (rank-zero experiments)
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        folder = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
    return trainer.strategy.broadcast(folder)


def save_firing_rates(
    path: Path,
    stage: str,
    histograms: Mapping[str, FiringRateHistogram],
    counts: Mapping[str, tuple[torch.Tensor, float]],
    epoch: int,
    global_step: int,
    monitor: str = "",
) -> None:
    """Write ``monitor``'s layers into ``stage``'s entry of ``path`` (``RATES_FILE``; format in the
    module docstring), keeping the other stage's entry; written atomically. The layers other monitors
    wrote for the same evaluation (same epoch and step) stay; an older evaluation's are replaced."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    layers, owners = {}, {}
    entry = saved.get(stage)
    if (
        isinstance(entry, dict)
        and (entry.get("epoch"), entry.get("global_step")) == (epoch, global_step)
        and isinstance(entry.get("layers"), dict)
        and isinstance(entry.get("monitors"), dict)
    ):
        owners = {owner: names for owner, names in entry["monitors"].items() if owner != monitor}
        kept = {name for names in owners.values() for name in names}
        layers = {layer: value for layer, value in entry["layers"].items() if layer in kept}
    layers.update(
        {
            layer: {
                "rows": int(counts[layer][1]),
                "nonzero": [int(v) for v in counts[layer][0].tolist()],
                "histogram": list(h.counts),
                "dead": h.dead,
            }
            for layer, h in histograms.items()
        }
    )
    owners[monitor] = list(histograms)
    bins = next(iter(histograms.values())).bins if histograms else HISTOGRAM_BINS
    saved.update({"format": 1, "bins": bins})
    saved[stage] = {"epoch": epoch, "global_step": global_step, "layers": layers, "monitors": owners}
    write_atomically(path, json.dumps(saved, separators=(",", ":")) + "\n")
