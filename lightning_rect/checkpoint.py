"""Checkpoint files: the epoch-end ``last.ckpt`` every fit keeps, and loading a pre-trained encoder
from a ``StackedDAE`` checkpoint, with one-line errors for bad files (read safely through
``checkpoint_io``: plain tensors and values only)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightning import Trainer

from lightning_rect.encoder import Encoder
from lightning_rect.errors import CheckpointError

#: Key written into every lightning_rect checkpoint, naming the model class that wrote it.
MODEL_KEY = "lightning_rect_model"


def last_checkpoint_path(trainer: Trainer) -> str:
    """Path of the newest epoch-end checkpoint written so far, or ""."""
    for callback in trainer.checkpoint_callbacks:
        path = callback.last_model_path or (callback.best_model_path if callback.monitor is None else "")
        if path:
            return path
    return ""


def read_checkpoint(path: str | Path) -> dict:
    """A ``pretrained`` checkpoint, loaded safely (plain tensors and values only), or a one-line error."""
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(
            f"pretrained checkpoint {str(path)!r} does not exist; pass the .ckpt file written by "
            "`python -m lightning_rect fit --config configs/<name>_pretrain.yaml` (see its log directory)"
        )
    try:
        checkpoint = load_checkpoint_file(path)
    except UnreadableCheckpoint as err:
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint: it {err.reason}; "
            "point `pretrained` at a .ckpt file written by a StackedDAE run"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no state_dict); use a .ckpt from a StackedDAE run")
    return checkpoint


def load_pretrained_encoder(encoder: Encoder, path: str | Path, activation: str) -> None:
    """Copy the encoder weights (and fixed scales) of a ``StackedDAE`` checkpoint into ``encoder``."""
    checkpoint = read_checkpoint(path)
    model = checkpoint.get(MODEL_KEY)
    if model != "StackedDAE":
        raise CheckpointError(
            f"{str(path)!r} was written by {model or 'an unknown model'}, not by StackedDAE; "
            "`pretrained` expects a pre-training checkpoint (configs/*_pretrain.yaml)"
        )
    hparams = checkpoint.get("hyper_parameters", {})
    theirs = [hparams.get("in_features"), *hparams.get("hidden_sizes", [])]
    ours = [encoder.in_features, *encoder.hidden_sizes]
    if theirs != ours:
        raise CheckpointError(
            f"layer sizes differ: checkpoint {str(path)!r} has {theirs} (input, hidden...), this model has {ours}; "
            "use the same hidden_sizes and data set as the pre-training run"
        )
    if hparams.get("activation") != activation:
        raise CheckpointError(
            f"activation differs: checkpoint has {hparams.get('activation')!r}, this model has {activation!r}; "
            "fine-tune with the activation that was pre-trained"
        )
    prefix = "encoder."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{str(path)!r}: encoder weights do not match (missing {missing}, unexpected {unexpected})")


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that cannot be loaded; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str, fix: str = "use another .ckpt (a run's last.ckpt or best-epoch=N.ckpt)"):
        super().__init__(f"checkpoint {str(path)!r} {reason}; {fix}")
        self.path, self.reason = path, reason


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
