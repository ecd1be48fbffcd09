"""Checkpoint files written whole or not at all, and read back with one-line errors.

``AtomicCheckpointIO`` is a Lightning ``CheckpointIO`` plugin (the CLI adds it to every Trainer
unless the config names its own). Each checkpoint is serialised in memory, written to a temporary
file *in the destination folder*, flushed and fsynced, then moved over the old file with
``os.replace``, which is atomic within one file system: at every instant the path holds either the
previous complete checkpoint or the new complete one. (Lightning's own writer goes through a
temporary file in ``$TMPDIR``; when that is another file system the final move is a copy, and a
kill during it leaves a truncated file.) A failed write removes its temporary file and raises a
``CheckpointError`` naming the folder and the cause (no space, read-only, permission). A write
killed outright leaves only its hidden temporary file, removed by the next write of that name.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
import time
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_rect.checkpoint import load_checkpoint_file
from lightning_rect.errors import CheckpointError

#: Test hook: seconds to sleep half-way through every checkpoint write (to kill a process mid-write).
PAUSE_ENV = "LIGHTNING_RECT_CHECKPOINT_WRITE_PAUSE"
TMP_SUFFIX = ".tmp"

CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes are atomic on any file system and whose reads fail in one line."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        if "://" in str(path):  # a remote URL: fsspec's own writer
            super().save_checkpoint(checkpoint, path)
            return
        save_atomically(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Callable | Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only)


def save_atomically(checkpoint: Any, path: Path) -> None:
    """Write ``checkpoint`` to ``path`` through a fsynced temporary file in the same folder."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    folder, tmp = path.parent, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=folder)
        with os.fdopen(fd, "wb") as file:
            with suppress(OSError):
                os.fchmod(file.fileno(), 0o666 & ~_UMASK)  # as an ordinary new file, not mkstemp's 0600
            write_file(file, buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as err:
        raise CheckpointError(write_failure(path, err)) from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.remove(tmp)


def write_file(file: io.BufferedWriter, data: memoryview) -> None:
    """Write ``data``; with ``$LIGHTNING_RECT_CHECKPOINT_WRITE_PAUSE`` set, pause half-way (tests)."""
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    if pause <= 0:
        file.write(data)
        return
    half = len(data) // 2
    file.write(data[:half])
    file.flush()
    time.sleep(pause)
    file.write(data[half:])


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of ``path`` left by a write that was killed (one writer per path at a time)."""
    for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        with suppress(OSError):
            stale.unlink()


def write_failure(path: Path, err: OSError) -> str:
    cause = CAUSES.get(err.errno) or (err.strerror or str(err)).lower()
    fix = ("free some space or write the run elsewhere (--trainer.logger.init_args.save_dir=...)"
           if err.errno in (errno.ENOSPC, errno.EDQUOT) else
           "make the folder writable or write the run elsewhere (--trainer.logger.init_args.save_dir=...)")
    return (f"cannot write checkpoint {path.name} in {path.parent}: {cause}; "
            f"any earlier checkpoint there is unchanged; {fix}")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every OS opens folders)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def latest_checkpoint() -> ModelCheckpoint:
    """Writes ``last.ckpt`` at every epoch end, overwriting the previous one.

    A separate callback because since Lightning 2.6 ``save_last=True`` on a monitoring checkpoint
    writes ``last.ckpt`` only when a new best is saved: a run whose validation error stopped
    improving would otherwise resume from its best epoch instead of its last.
    """
    return ModelCheckpoint(filename="last", enable_version_counter=False)


def writes_last_every_epoch(callback: ModelCheckpoint) -> bool:
    return callback.monitor is None and (callback.filename == "last" or bool(callback.save_last))
