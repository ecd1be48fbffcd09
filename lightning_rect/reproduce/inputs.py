"""What a run was made from, kept beside it as ``inputs.json``: a finished run is reused only when
nothing that changes its result has changed since.

A run's id already covers its config file's name and its settings. Its result also depends on

- the data: a fingerprint of the data set's files (their names relative to the data folder, and
  their sizes: a few ``stat`` calls), the same on every machine that holds the same files, so runs
  finished elsewhere and committed to the repository are reused; the folder is recorded, not compared;
- the config file's content as the run sees it: the parsed YAML with the run's settings applied, so
  comments, and values the run overrides anyway, do not make it stale;
- what the code does with that config: a short seeded probe (``probe``), compared within a
  tolerance, so a change to the numerics makes the run stale and a refactor does not.

The version of lightning_rect is recorded too, but not compared: it says which release wrote the
run, not how the run would train today. Paths are recorded relative to the working folder (the
repository), so the file reads the same on every machine.

A fine-tuning run also depends on the pre-training it starts from: the runner trains it again
whenever one of its pre-training runs trains again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning_rect
from lightning_rect.reproduce.budgets import DATASETS
from lightning_rect.reproduce.plan import RunSpec
from lightning_rect.reproduce.probe import effective_config, probe_differences, run_probe

INPUTS_FILE = "inputs.json"


_PROBES: dict[str, dict[str, Any]] = {}  # effective config -> probe, within one process


def run_inputs(
    spec: RunSpec, config: dict[str, Any], data_folder: Path | None, execution: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What ``spec`` is made from; ``config`` is its effective config (``probe.effective_config``).
    ``execution``: settings of how the run trains, not what (``fast_path.py``): the probe trains with
    them, the config's fingerprint leaves them out."""
    probed = effective_config(config, execution or {})
    return {
        "lightning_rect": lightning_rect.__version__,
        "config": {"file": spec.config, "sha1": _sha1(json.dumps(config, sort_keys=True, default=str).encode())},
        "settings": spec.settings,
        "needs": list(spec.needs),
        "data": data_fingerprint(spec.dataset, data_folder),
        "probe": probe_of(probed, data_folder),
    }


def probe_of(config: dict[str, Any], data_folder: Path | None) -> dict[str, Any]:
    """The run's probe (``probe.run_probe``); one that cannot run says why instead."""
    key = json.dumps([config, str(data_folder)], sort_keys=True, default=str)
    if key not in _PROBES:
        try:
            _PROBES[key] = run_probe(config, data_folder)
        except Exception as err:  # noqa: BLE001 - e.g. data missing here: said, and the run is not reused
            _PROBES[key] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return _PROBES[key]


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
    return {"folder": _relative(folder), "files": len(entries), "sha1": _sha1(json.dumps(entries).encode())}


def _relative(folder: Path) -> str:
    """``folder`` relative to the working folder where that is short (``../shared/data``)."""
    import os

    relative = Path(os.path.relpath(Path(folder).resolve(), Path.cwd()))
    return relative.as_posix() if relative.parts[:2] != ("..", "..") else str(folder)


def _written_by_runs(name: str) -> bool:
    """Files the data modules write beside the raw files (NORB's converted cache, half-written
    temporaries): the first run writing them must not make the others stale."""
    return "cache" in name or ".tmp" in name


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def read_inputs(run_folder: Path) -> dict[str, Any] | None:
    """A run's inputs.json; None when there is none; ``RunFileError`` when it is damaged."""
    from lightning_rect.reproduce.run_files import read_json_object

    return read_json_object(run_folder / INPUTS_FILE, "record of a run's inputs")


def write_inputs(run_folder: Path, inputs: dict[str, Any]) -> None:
    (run_folder / INPUTS_FILE).write_text(json.dumps(inputs, indent=2) + "\n")


def differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What changed between the inputs a run was made from and the current ones, in words."""
    if recorded is None:
        return [f"no {INPUTS_FILE} says what it was made from"]
    changed = []
    old_data = data if isinstance(data := recorded.get("data"), dict) else {}
    new_data = current["data"] or {}
    if (old_data.get("files"), old_data.get("sha1")) != (new_data.get("files"), new_data.get("sha1")):
        changed.append(
            f"data files in {new_data.get('folder')} differ from those the run read in "
            f"{old_data.get('folder')} ({old_data.get('files')} -> {new_data.get('files')} files, "
            "or their names or sizes)"
        )
    if recorded.get("config") != current["config"]:
        changed.append(f"config {current['config']['file']} edited")
    if recorded.get("settings") != current["settings"] or recorded.get("needs") != current["needs"]:
        changed.append("settings")
    probe = current.get("probe") or {}
    if "error" in probe:
        changed.append(f"its probe cannot run here ({probe['error']})")
    elif not changed:
        changed += [f"the code trains it differently: {why}" for why in probe_differences(recorded.get("probe"), probe)]
    return changed
