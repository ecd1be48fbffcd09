"""Read an offline W&B run back without uploading it: what ``wandb sync`` would send.

Test-only: the tests of ``callbacks/wandb.yaml`` (tests/test_wandb.py) check an offline run's
metrics, config, summary and attached files with it. Not part of the installed package.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OfflineRun:
    """What an offline run's ``run-<id>.wandb`` file holds (the last value of each key)."""

    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Read ``<save_dir>/wandb/offline-run-*/run-*.wandb`` without uploading it.

    The file is W&B's append-only record log (a LevelDB-style log of protobuf ``Record``s), which is
    what ``wandb sync`` uploads; reading it checks what a sync would send. ``history`` keeps the
    last logged value of every metric, ``summary`` the explicit summary updates.
    """
    from wandb.proto import wandb_internal_pb2

    run_dir = Path(run_dir)
    found = sorted(run_dir.glob("run-*.wandb")) if run_dir.is_dir() else [run_dir]
    if not found or not found[0].is_file():
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}; pass an offline-run-* folder")
    run = OfflineRun()
    for data in _log_records(found[0].read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                run.config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_item_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                if item.value_json:
                    run.history[_item_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
    return run


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


#: The log's layout: a 7-byte file header (":W&B", magic 0xBEE1, version), then 32 KiB blocks of
#: chunks, each with a 7-byte header (CRC32, length, type); a record too long for the rest of a
#: block continues in the next one (types FIRST, MIDDLE, LAST; FULL = a whole record).
_BLOCK, _CHUNK_HEADER = 32 * 1024, struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_records(raw: bytes):
    if raw[:4] != b":W&B":
        raise ValueError("not a W&B run file (no :W&B header)")
    pos, pending = 7, b""
    while pos + _CHUNK_HEADER.size <= len(raw):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER.size:  # block trailer: zero padding
            pos += room
            continue
        _checksum, length, kind = _CHUNK_HEADER.unpack_from(raw, pos)
        start = pos + _CHUNK_HEADER.size
        chunk = raw[start : start + length]
        pos = start + length
        if kind == 0 and length == 0:
            continue
        if len(chunk) < length:
            break  # the writer stopped mid-record (run still going, or killed)
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
