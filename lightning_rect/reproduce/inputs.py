"""What a run was made from, kept beside it as ``inputs.json``: a finished run is reused only when
nothing that changes its result has changed since.

A run's id already covers its config file's name and its settings. Its result also depends on

- the data: a fingerprint of the data set's files (their names relative to the data folder, and
  their sizes: a few ``stat`` calls), the same on every machine that holds the same files, so runs
  finished elsewhere and committed to the repository are reused; the folder is recorded, not compared;
- the config file's content as the run sees it: the parsed YAML with the run's settings applied, so
  comments, and values the run overrides anyway, do not make it stale;
- the version of lightning_rect that trained it.

A fine-tuning run also depends on the pre-training it starts from: the runner trains it again
whenever one of its pre-training runs trains again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

import lightning_rect
from lightning_rect.reproduce.budgets import DATASETS
from lightning_rect.reproduce.plan import RunSpec

INPUTS_FILE = "inputs.json"


def run_inputs(spec: RunSpec, config_path: Path, data_folder: Path | None) -> dict[str, Any]:
    return {"lightning_rect": lightning_rect.__version__,
            "config": {"file": spec.config, "sha1": config_fingerprint(config_path, spec.settings)},
            "settings": spec.settings, "needs": list(spec.needs),
            "data": data_fingerprint(spec.dataset, data_folder)}


def config_fingerprint(config_path: Path, settings: dict[str, Any]) -> str:
    """Digest of the config as the run sees it: the parsed YAML with the run's dotted settings set
    (appending ones, ``key+``, are part of the settings and left out here)."""
    config = yaml.safe_load(config_path.read_text()) or {}
    for key, value in settings.items():
        if key.endswith("+"):
            continue
        node = config
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return _sha1(json.dumps(config, sort_keys=True, default=str).encode())


def data_fingerprint(dataset: str, folder: Path | None) -> dict[str, Any] | None:
    """The data folder and a digest of the names and sizes of its files for ``dataset``; None for
    data that ship with a package (digits)."""
    facts = DATASETS[dataset]
    if not facts.uses_data_dir or folder is None:
        return None
    entries = []
    for sub in facts.data_folders:
        for path in sorted((folder / sub).rglob("*")):
            if path.is_file() and not _written_by_runs(path.name):
                entries.append([path.relative_to(folder).as_posix(), path.stat().st_size])
    return {"folder": str(folder), "files": len(entries), "sha1": _sha1(json.dumps(entries).encode())}


def _written_by_runs(name: str) -> bool:
    """Files the data modules write beside the raw files (NORB's converted cache, half-written
    temporaries): the first run writing them must not make the others stale."""
    return "cache" in name or ".tmp" in name


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def read_inputs(run_folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_folder / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_inputs(run_folder: Path, inputs: dict[str, Any]) -> None:
    (run_folder / INPUTS_FILE).write_text(json.dumps(inputs, indent=2) + "\n")


def differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What changed between the inputs a run was made from and the current ones, in words."""
    if recorded is None:
        return [f"no {INPUTS_FILE} says what it was made from"]
    changed = []
    old_data, new_data = recorded.get("data") or {}, current["data"] or {}
    if (old_data.get("files"), old_data.get("sha1")) != (new_data.get("files"), new_data.get("sha1")):
        changed.append(f"data files in {new_data.get('folder')} differ from those the run read in "
                       f"{old_data.get('folder')} ({old_data.get('files')} -> {new_data.get('files')} files, "
                       "or their names or sizes)")
    if recorded.get("config") != current["config"]:
        changed.append(f"config {current['config']['file']} edited")
    if recorded.get("lightning_rect") != current["lightning_rect"]:
        changed.append(f"lightning_rect {recorded.get('lightning_rect')} -> {current['lightning_rect']}")
    if recorded.get("settings") != current["settings"] or recorded.get("needs") != current["needs"]:
        changed.append("settings")
    return changed
