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
from lightning.pytorch.plugins.io import TorchCheckpointIO

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


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that cannot be loaded; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str, fix: str = "use another .ckpt (a run's last.ckpt or best-epoch=N.ckpt)"):
        super().__init__(f"checkpoint {str(path)!r} {reason}; {fix}")
        self.path, self.reason = path, reason


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


def load_checkpoint_file(path: Any, map_location: Any = "cpu", weights_only: bool | None = None, mmap: bool = False) -> Any:
    """``torch.load`` of a local checkpoint file, every failure a one-line ``CheckpointError``.

    Loading stays safe (torch's default ``weights_only`` for files): a file that holds arbitrary
    objects is refused, never loaded with fewer checks.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableCheckpoint(path, "does not exist", "pass the path of a .ckpt file (a run's checkpoints/last.ckpt "
                                   "or best-epoch=N.ckpt), or --ckpt_path last")
    if path.is_dir():
        raise UnreadableCheckpoint(path, "is a folder", "pass one .ckpt file in it")
    if path.stat().st_size == 0:
        raise UnreadableCheckpoint(path, "is empty (0 bytes, cut off while being written)")
    if not zipfile.is_zipfile(path):  # every torch.save since torch 1.6 writes a zip archive
        raise UnreadableCheckpoint(path, "is not a PyTorch checkpoint (truncated, or another kind of file)")
    kwargs = {"mmap": True} if mmap else {}
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, **kwargs)
    except pickle.UnpicklingError:
        raise UnreadableCheckpoint(
            path, "holds objects that a safe load refuses, so it was not loaded (it was not written by a Lightning "
            "run of this package)", "use a .ckpt written by `fit`; open files of unknown origin only if you trust "
            "them") from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError, KeyError) as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        if "weights_only" in reason:
            reason = "unreadable"
        raise UnreadableCheckpoint(path, f"is unreadable ({type(err).__name__}: {reason})") from None


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
