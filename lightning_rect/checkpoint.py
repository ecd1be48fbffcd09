"""Reading checkpoints: the one loader, with one vocabulary of one-line errors, and pre-trained encoders.

``load_checkpoint_file`` is the only place a checkpoint is read, a local file or a remote URL
(through fsspec) alike, and always as weights (``torch.load(weights_only=True)``: plain tensors and
values): a file that holds other objects is refused, never loaded with fewer checks. Every failure is
a ``CheckpointError`` of the form ``<what> '<path>' <problem>; <fix>``.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rect.encoder import Encoder
from lightning_rect.errors import CheckpointError

#: Key written into every lightning_rect checkpoint, naming the model class that wrote it.
MODEL_KEY = "lightning_rect_model"
RUN_CHECKPOINT = "pass a .ckpt written by a fit (runs/<name>/version_<N>/checkpoints/), or --ckpt_path last"
PRETRAINED = "pass the best-epoch=<N>.ckpt of a *_pretrain.yaml run (its results.json names it)"


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, what: str, path: Any, reason: str, fix: str) -> None:
        super().__init__(f"{what} {str(path)!r} {reason}; {fix}")
        self.path, self.reason = path, reason


def load_checkpoint_file(
    path: Any,
    map_location: Any = "cpu",
    *,
    what: str = "checkpoint",
    fix: str = RUN_CHECKPOINT,
    lightning: bool = False,
    mmap: bool = False,
) -> Any:
    """The checkpoint at ``path`` (with ``lightning``: one with a ``state_dict``), loaded as weights only."""
    source: io.BytesIO | Path
    if "://" in str(path):
        source = _fetch(str(path), what, fix)
    else:
        source = Path(path)
        if source.is_dir():
            inside = sorted({*source.glob("*.ckpt"), *source.glob("checkpoints/*.ckpt")})
            shown = ", ".join(str(p.relative_to(source)) for p in inside[:3]) + (" and more" if len(inside) > 3 else "")
            raise UnreadableCheckpoint(
                what,
                path,
                "is a folder, not a checkpoint file",
                f"pass the .ckpt file inside it ({f'it holds {shown}' if inside else 'none there'})",
            )
        if not source.is_file():
            raise UnreadableCheckpoint(what, path, "does not exist", fix)
        if source.stat().st_size == 0:
            raise UnreadableCheckpoint(what, path, "is empty (0 bytes): a write that never finished", fix)
    if not zipfile.is_zipfile(source):  # every torch.save since torch 1.6 writes a zip archive
        raise UnreadableCheckpoint(what, path, "is not a PyTorch checkpoint (truncated, or another kind of file)", fix)
    if (damaged := _member_failing_its_checksum(source)) is not None:
        raise UnreadableCheckpoint(
            what, path, f"is damaged: its part {damaged} fails its checksum (changed after it was written)", fix
        )
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        checkpoint = torch.load(
            source, map_location=map_location, weights_only=True, mmap=mmap and isinstance(source, Path)
        )
    except pickle.UnpicklingError:
        raise UnreadableCheckpoint(
            what, path, "holds objects that a safe load refuses, so it was not loaded", fix
        ) from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError, KeyError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise UnreadableCheckpoint(what, path, f"is unreadable ({type(err).__name__}: {reason})", fix) from None
    if lightning and (not isinstance(checkpoint, dict) or "state_dict" not in checkpoint):
        raise UnreadableCheckpoint(what, path, "is not a Lightning checkpoint (no state_dict)", fix)
    return checkpoint


def _member_failing_its_checksum(source: io.BytesIO | Path) -> str | None:
    """The first member of the checkpoint's zip archive whose bytes do not match the CRC-32 written
    with them, or None. ``torch.load`` does not check them: bytes changed inside a tensor (a bad disk
    or copy) would load as finite nonsense."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        with zipfile.ZipFile(source) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):  # unreadable: torch.load's error says how
        return None


def _fetch(url: str, what: str, fix: str) -> io.BytesIO:
    """The bytes at a remote ``url`` (http, s3, ... as fsspec knows them)."""
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(url)
        return io.BytesIO(fs.cat_file(path))
    except FileNotFoundError:
        raise UnreadableCheckpoint(what, url, "does not exist", fix) from None
    except Exception as err:  # noqa: BLE001 - any transport failure is this one line
        raise UnreadableCheckpoint(what, url, f"could not be fetched ({type(err).__name__}: {err})", fix) from None


def last_checkpoint_path(trainer: Trainer) -> str:
    """Path of the newest epoch-end checkpoint of this run written so far, or "": a file that exists in the
    run's own checkpoint folder (a path restored from another run's checkpoint is never named)."""
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):  # the Checkpoint base class names no files
            continue
        path = callback.last_model_path or (callback.best_model_path if callback.monitor is None else "")
        if path and _in_own_folder(path, getattr(callback, "dirpath", None)):
            return path
    return ""


def _in_own_folder(path: str, dirpath: Any) -> bool:
    if "://" in str(path):
        return True  # a remote run folder: trusted as Lightning names it
    try:
        return Path(path).is_file() and (dirpath is None or Path(path).resolve().parent == Path(dirpath).resolve())
    except OSError:
        return False


def nonfinite_weights(state_dict: dict) -> list[tuple[str, int]]:
    """(key, count) of each floating-point tensor of ``state_dict`` that holds NaN or infinite values."""
    bad = []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad.append((key, int((~finite).sum())))
    return bad


def read_pretrained(path: Any, mmap: bool = False) -> dict:
    """A ``StackedDAE`` checkpoint for ``pretrained``, or a one-line ``CheckpointError``."""
    checkpoint = load_checkpoint_file(path, what="pretrained checkpoint", fix=PRETRAINED, lightning=True, mmap=mmap)
    model = checkpoint.get(MODEL_KEY)
    if model != "StackedDAE":
        raise CheckpointError(
            f"pretrained checkpoint {str(path)!r} was written by {model or 'an unknown model'}, "
            f"not by StackedDAE; {PRETRAINED}"
        )
    if bad := nonfinite_weights(checkpoint["state_dict"]):
        raise CheckpointError(
            f"pretrained checkpoint {str(path)!r} holds NaN or infinite weights ({bad[0][1]} in "
            f"{bad[0][0]}): its pre-training diverged; {PRETRAINED} that finished with finite values"
        )
    return checkpoint


@dataclass
class PretrainedEncoder:
    """What a ``StackedDAE`` checkpoint holds of its encoder: how it was built and its state."""

    path: str
    in_features: int
    hidden_sizes: list[int]
    activation: str
    activation_args: dict | None
    sign_flip: bool
    state: dict[str, torch.Tensor]  # the encoder's state_dict: weights and fixed output scales

    def build(self) -> Encoder:
        """A new ``Encoder`` as pre-trained, with its weights in the dtype they were saved in (a DAE
        pre-trained under ``precision="64-true"`` gives a float64 encoder)."""
        encoder = Encoder(self.in_features, self.hidden_sizes, self.activation, self.activation_args, self.sign_flip)
        # the linear layers' dtype (a layer's extra state, its fixed output scale, is always float64)
        saved = {t.dtype for k, t in self.state.items() if k.endswith(".linear.weight") and isinstance(t, torch.Tensor)}
        if len(saved) == 1:
            encoder.to(saved.pop())
        self.load_into(encoder)
        return encoder

    def load_into(self, encoder: Encoder) -> None:
        """Copy the weights (and fixed scales) into ``encoder``, which must have the same layers."""
        missing, unexpected = encoder.load_state_dict(self.state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{self.path!r}: encoder weights do not match (missing {missing}, unexpected {unexpected})"
            )


def read_pretrained_encoder(path: str | Path) -> PretrainedEncoder:
    """The encoder of a ``StackedDAE`` checkpoint (``read_pretrained``'s checks), or a one-line ``CheckpointError``."""
    checkpoint = read_pretrained(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if "in_features" not in hparams or "hidden_sizes" not in hparams:
        raise CheckpointError(
            f"pretrained checkpoint {str(path)!r} records no in_features and hidden_sizes; "
            "pass a .ckpt written by a StackedDAE fit"
        )
    return PretrainedEncoder(
        path=str(path),
        in_features=hparams["in_features"],
        hidden_sizes=list(hparams["hidden_sizes"]),
        activation=hparams.get("activation", "rectifier"),
        activation_args=hparams.get("activation_args"),
        sign_flip=bool(hparams.get("sign_flip", False)),
        state={k.removeprefix("encoder."): v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")},
    )


def load_pretrained_encoder(encoder: Encoder, path: str | Path, activation: str) -> None:
    """Copy the encoder weights (and fixed scales) of a ``StackedDAE`` checkpoint into ``encoder``,
    after checking that it has the pre-trained layer sizes and ``activation``."""
    pretrained = read_pretrained_encoder(path)
    theirs = [pretrained.in_features, *pretrained.hidden_sizes]
    ours = [encoder.in_features, *encoder.hidden_sizes]
    if theirs != ours:
        raise CheckpointError(
            f"layer sizes differ: checkpoint {str(path)!r} has {theirs} (input, hidden...), this model "
            f"has {ours}; use the same hidden_sizes and data set as the pre-training run"
        )
    if pretrained.activation != activation:
        raise CheckpointError(
            f"activation differs: checkpoint {str(path)!r} has {pretrained.activation!r}, this model has "
            f"{activation!r}; fine-tune with the activation that was pre-trained"
        )
    pretrained.load_into(encoder)
