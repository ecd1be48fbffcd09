"""Checkpoint files: the epoch-end ``last.ckpt`` every fit keeps, and loading a pre-trained encoder
from a ``StackedDAE`` checkpoint, with one-line errors for bad files (read safely through
``checkpoint_io``: plain tensors and values only)."""

from __future__ import annotations

from pathlib import Path

from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rect.checkpoint_io import UnreadableCheckpoint, load_checkpoint_file
from lightning_rect.encoder import Encoder
from lightning_rect.errors import CheckpointError

#: Key written into every lightning_rect checkpoint, naming the model class that wrote it.
MODEL_KEY = "lightning_rect_model"


def latest_checkpoint() -> ModelCheckpoint:
    """Writes ``last.ckpt`` at every epoch end, overwriting the previous one.

    A separate callback because since Lightning 2.6 ``save_last=True`` on a monitoring checkpoint
    writes ``last.ckpt`` only when a new best is saved: a run whose validation error stopped
    improving would otherwise resume from its best epoch instead of its last.
    """
    return ModelCheckpoint(filename="last", enable_version_counter=False)


def writes_last_every_epoch(callback: ModelCheckpoint) -> bool:
    return callback.monitor is None and (callback.filename == "last" or bool(callback.save_last))


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
