"""What the figures read: a run folder's files, and nothing else (so old runs redraw the same way).

A run folder is what ``fit`` leaves in ``runs/<name>/version_N/``:

- ``metrics.csv`` (Lightning's ``CSVLogger``): one row per logging call; here every ``train/`` and
  ``val/`` column becomes one value per epoch (the last one logged in that epoch), ``test/``
  columns and per-step ``train_step/`` columns are left out;
- ``results.json`` (the CLI): model, data, selection metric, selected (best) epoch, test numbers;
- ``config.yaml`` (LightningCLI): the resolved config, for the legends of overlays;
- ``firing_rates.json`` (``SparsityMonitor``): per-unit firing counts and histograms of the last
  validation epoch and of the test.

Only ``metrics.csv`` is required; a figure leaves out what a missing file would have shown.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_rect.app.results import RESULTS_FILE
from lightning_rect.errors import LightningRectError

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
#: Written by ``SparsityMonitor`` (``lightning_rect.callbacks.sparsity.RATES_FILE``); named here
#: too so that drawing a figure does not import torch and Lightning.
RATES_FILE = "firing_rates.json"


class RunFolderError(LightningRectError):
    """A folder that is not a run folder (no ``metrics.csv``)."""


@dataclass
class Run:
    folder: Path
    #: metric -> {epoch: value}: the last value logged in each epoch
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    rates: dict[str, Any] | None = None

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of ``key``, finite values only, in epoch order."""
        points = sorted((e, v) for e, v in self.series.get(key, {}).items() if math.isfinite(v))
        return [e for e, _ in points], [v for _, v in points]

    def has(self, key: str) -> bool:
        return bool(self.curve(key)[0])

    def layers(self, stage: str = "val") -> list[str]:
        """Layer names with ``<stage>/sparsity/<layer>`` columns, in natural order (layer_2 < layer_10)."""
        prefix = f"{stage}/sparsity/"
        names = [k[len(prefix) :] for k in self.series if k.startswith(prefix) and k != prefix + "mean"]
        return sorted(names, key=natural_key)

    def pretrain_layers(self) -> list[int]:
        """k of every ``train/pretrain/layer_<k>/recon`` or ``val/...`` column (StackedDAE), sorted."""
        found = {
            int(m.group(1)) for k in self.series if (m := re.fullmatch(r"(?:train|val)/pretrain/layer_(\d+)/recon", k))
        }
        return sorted(found)

    @property
    def best_epoch(self) -> int | None:
        value = self.results.get("best_epoch")
        return value if isinstance(value, int) else None

    @property
    def selection_metric(self) -> str | None:
        metric = self.results.get("selection_metric")
        if isinstance(metric, str):
            return metric
        return next((k for k in ("val/err", "val/rmse", "val/recon") if self.has(k)), None)

    def final_rates(self) -> tuple[str, dict[str, Any]] | None:
        """(stage, entry) of the firing rates the summary shows: the test of the selected
        checkpoint when there is one, else the last validation epoch. A test that ran a layer at
        several call sites (a ``StackedDAE`` test evaluates every layer, running layer 1 once per
        evaluated layer: ``layer_1@1``, ``layer_1@2``) gives way to a validation epoch that ran
        each layer once."""
        if not self.rates:
            return None
        found = [
            (stage, entry)
            for stage in ("test", "val")
            if isinstance(entry := self.rates.get(stage), dict) and entry.get("layers")
        ]
        once = [(stage, entry) for stage, entry in found if not any("@" in name for name in entry["layers"])]
        chosen = once or found
        return chosen[0] if chosen else None

    @property
    def title(self) -> str:
        model, data = self.results.get("model"), self.results.get("data")
        return f"{model} on {data}" if model and data else str(self.folder)


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def resolve_run_folder(folder: str | Path) -> Path:
    """``folder`` itself when it holds ``metrics.csv``; for a folder of versions (``runs/digits``),
    its newest ``version_N`` that does."""
    folder = Path(folder)
    if (folder / METRICS_FILE).is_file():
        return folder
    versions = [p for p in folder.glob("version_*") if (p / METRICS_FILE).is_file() and p.name[8:].isdigit()]
    if versions:
        return max(versions, key=lambda p: int(p.name[8:]))
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such folder; give a run folder such as runs/digits/version_0")
    raise RunFolderError(
        f"{folder}: no {METRICS_FILE} here or in a version_N folder below; give the folder of "
        f"one run (where fit wrote {RESULTS_FILE}), e.g. runs/digits/version_0"
    )


def load_run(folder: str | Path) -> Run:
    folder = resolve_run_folder(folder)
    return Run(
        folder=folder,
        series=read_metrics(folder / METRICS_FILE),
        results=_read_json(folder / RESULTS_FILE) or {},
        config=read_config(folder / CONFIG_FILE),
        rates=_read_json(folder / RATES_FILE),
    )


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            for key, text in row.items():
                if key in (None, "epoch", "step") or not text or key.startswith(("test/", "train_step/")):
                    continue
                try:
                    series.setdefault(key, {})[epoch] = float(text)
                except ValueError:
                    continue
    return series


def read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return config if isinstance(config, dict) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
