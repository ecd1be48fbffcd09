"""The small files a finished run keeps in the repository, read back and checked against each other.

A report is only as true as these files, and they pass through hands: an edit, a merge, a copy cut
short. So a run's ``results.json`` is read strictly (a JSON object with the fields a report uses,
each of the right type and range) and cross-checked against the run's own ``metrics.csv``: the
best epoch's validation value, the best value being the lowest, and the test values. A run whose
files are damaged or disagree is never reported, reused, retrained or deleted without a word:
``RunFileError`` names the file and the field, and the command stops.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from lightning_rect.app.results import RESULTS_FILE

METRICS_FILE = "metrics.csv"
#: Relative tolerance between a value in results.json and the same value in metrics.csv (both are
#: written from one float32; CSV and JSON print it to different lengths).
RTOL = 1e-6


class RunFileError(ValueError):
    """A run file that cannot be read, or that disagrees with another of the run's files."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: {problem}; restore it from git (git checkout -- {path}) or delete the run's "
            "folder to train the run again"
        )


def read_results(log_dir: Path) -> dict[str, Any] | None:
    """A finished run's ``results.json``, checked; None when there is none (the run has not finished)."""
    path = log_dir / RESULTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(path, f"cannot be read ({err})") from None
    try:
        results = json.loads(text)
    except ValueError as err:
        raise RunFileError(path, f"is not valid JSON ({err}), perhaps cut short") from None
    if not isinstance(results, dict):
        raise RunFileError(path, f"holds a JSON {type(results).__name__}, not an object")
    _check_fields(path, results)
    return results


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(path: Path, results: dict[str, Any]) -> None:
    metric = results.get("selection_metric")
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise RunFileError(path, f"selection_metric is {metric!r}, not the name of a validation metric")
    for field in ("best_epoch", "epochs"):
        value = results.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RunFileError(path, f"{field} is {value!r}, not a whole number >= 0")
    if results["best_epoch"] >= results["epochs"]:
        raise RunFileError(path, f"best_epoch {results['best_epoch']} is not among its {results['epochs']} epochs")
    if not _number(results.get("best_val")):
        raise RunFileError(path, f"best_val is {results.get('best_val')!r}, not a number")
    if not _number(results.get("fit_seconds")) or results["fit_seconds"] < 0:
        raise RunFileError(path, f"fit_seconds is {results.get('fit_seconds')!r}, not a number of seconds")
    for key, value in results.items():
        if key.startswith("test/") or key.startswith("pretrain/"):
            if not _number(value):
                raise RunFileError(path, f"{key} is {value!r}, not a number")
            fraction = key.endswith("/err") or "/sparsity/" in key or key.endswith("/dead") or "/dead/" in key
            if fraction and not 0 <= value <= 1:
                raise RunFileError(path, f"{key} is {value!r}, not a fraction in [0, 1]")
    if not any(k.startswith("test/") for k in results):
        raise RunFileError(path, "holds no test/ value: the run's test did not finish")


def check_against_metrics(log_dir: Path, results: dict[str, Any]) -> None:
    """Refuse a ``results.json`` that its own ``metrics.csv`` contradicts (``RunFileError``)."""
    path = log_dir / METRICS_FILE
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError:
        raise RunFileError(path, f"is missing: {RESULTS_FILE} cannot be checked against it") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunFileError(path, f"cannot be read ({err})") from None
    metric = results["selection_metric"]
    per_epoch: dict[int, float] = {}
    for number, row in enumerate(rows, start=2):
        value = row.get(metric)
        if value is None or value == "":
            continue
        try:
            per_epoch[int(float(row["epoch"]))] = float(value)
        except (TypeError, ValueError, KeyError):
            raise RunFileError(
                path, f"line {number}: epoch {row.get('epoch')!r} or {metric} {value!r} is not a number"
            ) from None
    results_path = log_dir / RESULTS_FILE
    best_epoch, best_val = results["best_epoch"], results["best_val"]
    if best_epoch not in per_epoch:
        raise RunFileError(results_path, f"best_epoch is {best_epoch}, but {path.name} has no {metric} for that epoch")
    if not _close(per_epoch[best_epoch], best_val):
        raise RunFileError(
            results_path,
            f"best_val is {best_val!r}, but {path.name} has {metric} {per_epoch[best_epoch]!r} at epoch {best_epoch}",
        )
    finite = [v for v in per_epoch.values() if math.isfinite(v)]
    if finite and min(finite) < best_val and not _close(min(finite), best_val):
        lowest = min(per_epoch, key=lambda e: per_epoch[e] if math.isfinite(per_epoch[e]) else math.inf)
        raise RunFileError(
            results_path,
            f"best_val is {best_val!r}, but {path.name} has a lower {metric} ({per_epoch[lowest]!r}) at epoch {lowest}",
        )
    tested = [row for row in rows if any(row.get(k) not in (None, "") for k in results if k.startswith("test/"))]
    if not tested:
        raise RunFileError(path, f"has no test row to check {RESULTS_FILE}'s test values against")
    last = tested[-1]
    for key, value in results.items():
        logged = last.get(key)
        if key.startswith("test/") and logged is not None and logged != "":
            try:
                logged_value = float(logged)
            except ValueError:
                raise RunFileError(path, f"{key} is {logged!r}, not a number") from None
            if not _close(logged_value, value):
                raise RunFileError(results_path, f"{key} is {value!r}, but {path.name} logged {logged_value!r}")


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)


def read_json_object(path: Path, what: str) -> dict[str, Any] | None:
    """A run file that must hold a JSON object (``spec.json``, ``inputs.json``); None when absent."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunFileError(path, f"is not a readable {what} ({err})") from None
    if not isinstance(value, dict):
        raise RunFileError(path, f"holds a JSON {type(value).__name__}, not the object a {what} is")
    return value
