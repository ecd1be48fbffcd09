"""What a finished ``fit`` leaves behind: ``results.json``, the printed summary, and epoch numbering;
and what ``predict`` leaves: ``predictions.pt`` (``PredictionsFile``).

The CLI writes these; ``lightning_rect.reproduce`` reads them back for its reports. Epochs are
numbered from 0 everywhere, as Lightning numbers them in the progress bar and in checkpoint names.
``results.json``'s ``checkpoint`` is an absolute path, valid from any folder.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, SupportsFloat

import torch
from lightning import Callback, LightningModule, Trainer

from lightning_rect.files import atomic_write, write_atomically
from lightning_rect.lightning_attrs import trainer_fast_dev_run

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.pt"


def provenance() -> dict[str, str | None]:
    """Which code wrote a run: the package's version and, when it runs from a git checkout (an
    editable install), the commit, with ``+dirty`` when files differ from it; None elsewhere."""
    import subprocess

    import lightning_rect

    here = Path(lightning_rect.__file__).resolve().parent
    commit = None
    try:
        # a checkout that tracks these very files (not a wheel installed in a venv inside some repository)
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=here, capture_output=True, text=True, timeout=10
        )
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if tracked.returncode == 0 and head.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=10,
            )
            commit = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return {"lightning_rect": lightning_rect.__version__, "git_commit": commit}


def write_results(results: dict, log_dir: str | Path | None) -> Path:
    """Write ``results`` atomically (a reader never sees half a file) and print the summary."""
    out = Path(log_dir or ".") / RESULTS_FILE
    write_atomically(out, json.dumps(results, indent=2) + "\n")
    print(format_summary(results, out))
    return out


def read_results(log_dir: str | Path) -> dict | None:
    """The ``results.json`` of a run folder, or None when the run has not finished."""
    try:
        return json.loads((Path(log_dir) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None


def format_summary(results: dict, path: Path) -> str:
    def pct(key: str) -> str:
        value = results.get(key)
        return f"{100 * value:.2f}%" if isinstance(value, float) and math.isfinite(value) else "-"

    best = results["best_val"]
    lines = [
        f"results ({results['model']} on {results['data']}) -> {path}",
        f"  best {results['selection_metric']}: {best:.4g}" if isinstance(best, float) else "  best: -",
        f"  ({epoch_of_run(results['best_epoch'], results['epochs'])}, fit time {results['fit_seconds']:.1f} s)",
    ]
    if "test/err" in results:
        rmse = f"   test RMSE: {results['test/rmse']:.4f}" if "test/rmse" in results else ""
        lines.append(f"  test error: {pct('test/err')}{rmse}   test sparsity: {pct('test/sparsity/mean')}")
    else:
        lines.append(
            "  test: "
            + ", ".join(f"{k}={v:.4g}" for k, v in results.items() if k.startswith("test/") and isinstance(v, float))
        )
    dead = [
        f"layer {k.split('/')[1].removeprefix('layer_')} {100 * v:.1f}%"
        for k, v in results.items()
        if k.startswith("pretrain/layer_") and k.endswith("/dead") and isinstance(v, float)
    ]
    if dead:
        lines.append("  dead units after each layer's pre-training: " + ", ".join(dead))
    return "\n".join(lines)


def epoch_of_run(best_epoch: int | None, epochs: int | None) -> str:
    """'best epoch 27 of 0-29': numbered from 0, as in the progress bar and ``best-epoch=27.ckpt``."""
    best = "-" if best_epoch is None else str(best_epoch)
    return f"best epoch {best} of 0-{epochs - 1}" if epochs else f"best epoch {best}"


def epoch_of_checkpoint(path: str | None) -> int | None:
    """The epoch in a checkpoint name such as ``best-epoch=12.ckpt``."""
    match = re.search(r"epoch=(\d+)", Path(path).name) if path else None
    return int(match.group(1)) if match else None


def absolute_checkpoint(path: str | None) -> str | None:
    """A checkpoint path for ``results.json``: absolute, so it holds whatever folder reads it (a URL as is)."""
    if not path:
        return None
    return path if "://" in str(path) else str(Path(path).resolve())


class PredictionsFile(Callback):
    """``predict`` writes what ``predict_step`` returned into the run folder: ``predictions.pt``
    (``torch.load`` it), one row per example in the predict dataloader's order (for the models here the
    test split: a ``SparseMLP``'s predicted class, a ``StackedDAE``'s code, a ``StarRatingMLP``'s stars);
    the batches' tensors joined, else the list of what each batch returned; a list per dataloader when
    there are several. Several processes each write their share, ``predictions-rank<k>.pt``. Lightning's
    ``fast_dev_run`` writes nothing, and so does this."""

    def __init__(self) -> None:
        self._outputs: dict[int, list[Any]] = {}

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outputs = {}

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # kept here rather than read back from trainer.predict: under ddp_spawn that returns nothing
        self._outputs.setdefault(dataloader_idx, []).append(_to_cpu(outputs))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = trainer.log_dir  # broadcasts under DDP, so every rank must ask
        if trainer_fast_dev_run(trainer):
            if trainer.is_global_zero:
                print("fast_dev_run: the predictions were not written (Lightning's fast_dev_run writes nothing)")
            return
        per_loader = [_joined(self._outputs[k]) for k in sorted(self._outputs)]
        predictions = per_loader[0] if len(per_loader) == 1 else per_loader
        name = PREDICTIONS_FILE if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.pt"
        path = Path(folder or ".") / name
        with atomic_write(path) as file:
            torch.save(predictions, file)
        if trainer.is_global_zero:
            shares = "" if trainer.world_size == 1 else f" (this process's share; one file per process, {name})"
            print(f"predictions ({_describe(predictions)}) -> {path}{shares}")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def _joined(outputs: list[Any]) -> Any:
    """The batches' tensors as one tensor (one row per example), when they join; else the list."""
    if (
        outputs
        and all(isinstance(o, torch.Tensor) and o.dim() > 0 for o in outputs)
        and len({o.shape[1:] for o in outputs}) == 1
    ):
        return torch.cat(outputs)
    return outputs


def _describe(predictions: Any) -> str:
    if isinstance(predictions, torch.Tensor):
        return (
            f"{len(predictions)} examples, {str(predictions.dtype).removeprefix('torch.')} tensor of shape "
            f"{list(predictions.shape)}"
        )
    return f"a list of {len(predictions)}"


def to_float(value: SupportsFloat | None) -> float | None:
    return None if value is None else float(value.item() if hasattr(value, "item") else value)
