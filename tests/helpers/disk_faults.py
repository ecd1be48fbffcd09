"""Disks that fail, for tests of what a run leaves behind.

- ``FullDisk``: ``lightning_rect.files`` writes through it (its ``open`` is replaced for the test): the
  first ``writes_left`` writes of files whose name contains ``only`` succeed, later ones fail after
  ``free_bytes`` bytes with ``code`` (ENOSPC, EROFS, ...), as a full or read-only disk would.
- ``SlowCheckpointIO``: a CheckpointIO plugin (``--trainer.plugins``) that writes each checkpoint
  through the same ``atomic_write``, pausing half-way through the ``nth`` write (from 0) of a file
  named ``name``, so that a test can kill the process mid-write.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import time
from typing import TYPE_CHECKING

import fsspec.implementations.local
import torch

import lightning_rect.files
from lightning_rect.app.checkpoint_io import AtomicCheckpointIO
from lightning_rect.files import atomic_write

if TYPE_CHECKING:
    import pytest


class FullDisk:
    def __init__(self, code: int = errno.ENOSPC, writes_left: int = 0, free_bytes: int = 0, only: str = "") -> None:
        self.code, self.writes_left, self.free_bytes, self.only = code, writes_left, free_bytes, only

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FullDisk:
        monkeypatch.setattr(lightning_rect.files, "open", self.open, raising=False)
        # Lightning's CSV writer (metrics.csv) opens its files through fsspec's local file system
        monkeypatch.setattr(fsspec.implementations.local, "open", self.open, raising=False)
        return self

    def open(self, fd, mode: str = "r", **kwargs):
        file = builtins.open(fd, mode, **kwargs)
        if self.only not in os.readlink(f"/proc/self/fd/{file.fileno()}"):
            return file
        if self.writes_left > 0:
            self.writes_left -= 1
            return file
        return _Filling(file, self.free_bytes, self.code)


class _Filling:
    """A file that takes ``free`` more bytes, then fails every write with ``code``."""

    def __init__(self, file, free: int, code: int) -> None:
        self.file, self.free, self.code = file, free, code

    def write(self, data) -> int:
        if len(data) > self.free:
            self.file.write(data[: self.free])
            self.free = 0
            raise OSError(self.code, os.strerror(self.code))
        self.free -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self) -> _Filling:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


class SlowCheckpointIO(AtomicCheckpointIO):
    def __init__(self, pause: float = 2.0, name: str = "last.ckpt", nth: int = 1) -> None:
        super().__init__()
        self.pause, self.name, self.nth = pause, name, nth
        self.writes = 0  # of files named `name` so far

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        with atomic_write(path) as file:
            file.write(data[: len(data) // 2])
            file.flush()
            if os.path.basename(path) == self.name:
                if self.writes == self.nth:
                    time.sleep(self.pause)
                self.writes += 1
            file.write(data[len(data) // 2 :])
