"""Range checks for configuration values, and the checkpoint-path check; each failure names the field
and what is allowed."""

from __future__ import annotations

import math
import os
from pathlib import Path

from lightning_rect.errors import CheckpointError, ConfigError


def check_positive_int(name: str, value: object) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def check_non_negative(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def check_checkpoint_file(field: str, path: str | os.PathLike,
                          example: str = "runs/<name>/version_<N>/checkpoints/last.ckpt") -> Path:
    """``path`` when it is a file; a ``CheckpointError`` naming ``field`` when it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        inside = sorted({*path.glob("*.ckpt"), *path.glob("checkpoints/*.ckpt")})
        shown = ", ".join(p.name if p.parent == path else f"checkpoints/{p.name}" for p in inside[:3])
        hint = (f" (it holds {shown}{' and more' if len(inside) > 3 else ''})" if inside
                else " (it holds no .ckpt file)")
        raise CheckpointError(f"{field} {str(path)!r} is a folder, not a checkpoint file; pass the .ckpt file inside "
                              f"it{hint}")
    if not path.is_file():
        raise CheckpointError(f"{field} {str(path)!r} does not exist; pass the path of a .ckpt file, e.g. {example}")
    return path
