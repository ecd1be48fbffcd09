"""Checkpoint files written whole or not at all, read through the one safe loader.

``AtomicCheckpointIO`` (a ``CheckpointIO`` plugin the CLI adds unless the config names its own) writes
through ``lightning_rect.files.atomic_write``, whose temporary file is in the destination folder:
Lightning's own goes through ``$TMPDIR``, and where that is another file system its final move is
a copy that a kill leaves truncated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_rect.checkpoint import load_checkpoint_file
from lightning_rect.files import atomic_write

ELSEWHERE = "write the run elsewhere (--trainer.logger.init_args.save_dir=...)"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes are atomic on any file system and whose reads are always safe."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        if "://" in str(path):  # a remote URL: fsspec's own writer
            super().save_checkpoint(checkpoint, path)
            return
        with atomic_write(Path(path), elsewhere=ELSEWHERE) as file:
            torch.save(checkpoint, file)

    def load_checkpoint(
        self, path: Any, map_location: Callable | Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # weights only, whatever the caller asks: a checkpoint that needs more is refused in one line
        return load_checkpoint_file(path, map_location=map_location)


def latest_checkpoint() -> ModelCheckpoint:
    """Writes ``last.ckpt`` at every epoch end, overwriting the previous one.

    A separate callback because since Lightning 2.6 ``save_last=True`` on a monitoring checkpoint
    writes ``last.ckpt`` only when a new best is saved: a run whose validation error stopped
    improving would otherwise resume from its best epoch instead of its last.
    """
    return ModelCheckpoint(filename="last", enable_version_counter=False)


def writes_last_every_epoch(callback: ModelCheckpoint) -> bool:
    return callback.monitor is None and (callback.filename == "last" or bool(callback.save_last))
