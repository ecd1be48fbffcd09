"""``python -m lightning_rect fit --config configs/digits.yaml``: LightningCLI plus the paper's protocol.

What this adds to LightningCLI:
- data sizes are linked into the model (``data.input_size -> model.init_args.in_features``,
  ``data.num_classes -> model.init_args.num_classes``), so configs never repeat them;
- ``fit`` keeps the checkpoint with the best value of the model's ``selection_metric``
  (``val/err`` for ``SparseMLP``), then evaluates that checkpoint on the test split, prints a
  summary and writes it as ``results.json`` in the run's log directory;
- problems the user can fix (unknown registry name, bad value, missing data file, bad checkpoint)
  end the program with one line naming the cause, not a traceback.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.profilers import PassThroughProfiler

from lightning_rect.allocator import retain_freed_memory
from lightning_rect.callbacks import DivergenceGuard, ThrottledProgressBar
from lightning_rect.checkpoints import latest_checkpoint, writes_last_every_epoch
from lightning_rect.errors import CheckpointError, LightningRectError
from lightning_rect.profiler import NoOpProfiler
from lightning_rect.tracking import SaveConfigToWandb, publish_results


class RectCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # A rerun in the same log folder must not fail because config.yaml already exists there.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", SaveConfigToWandb)  # also into W&B runs, if any
        self._fit_started = 0.0
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_size", "model.init_args.in_features", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    # -- fit: keep the best checkpoint, then test it -------------------------------------------
    def before_fit(self) -> None:
        selection_checkpoint(self.trainer, self.model)
        prepare_fit(self.trainer)
        fit_args = self.config_init[self.subcommand]
        if fit_args.get("ckpt_path") == "last":
            fit_args["ckpt_path"] = resume_last(self.trainer)
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        fit_seconds = time.perf_counter() - self._fit_started
        trainer = self.trainer
        if trainer.interrupted:
            print("fit was interrupted; skipping the test of the best checkpoint", file=sys.stderr)
            return
        checkpoint = selection_checkpoint(trainer, self.model)
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        test_metrics = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best_path or None, verbose=False)
        results = {
            "model": type(self.model).__name__,
            "data": type(self.datamodule).__name__,
            "selection_metric": checkpoint.monitor if checkpoint is not None else None,
            "best_val": _to_float(checkpoint.best_model_score) if checkpoint is not None else None,
            "best_epoch": _epoch_of(best_path),
            "epochs": trainer.current_epoch,
            "fit_seconds": round(fit_seconds, 2),
            "checkpoint": best_path or None,
            **{k: _to_float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()},
        }
        log_dir = trainer.log_dir  # broadcasts under DDP, so every rank must ask, not rank 0 alone
        if trainer.is_global_zero:
            publish_results(trainer, results, write_results(results, log_dir))


def selection_checkpoint(trainer: Trainer, model: LightningModule) -> ModelCheckpoint | None:
    """The ModelCheckpoint that tracks ``model.selection_metric``; added if the config has none.

    Lightning's default checkpoint (no monitor, keeps the latest epoch) is replaced by ours, which
    keeps the best checkpoint (``best-epoch=N.ckpt``), plus a ``latest_checkpoint`` that rewrites
    ``last.ckpt`` at every epoch end (for ``--ckpt_path last``) unless a callback already does.
    """
    metric = getattr(model, "selection_metric", None)
    if metric is None or not trainer.checkpoint_callbacks:
        return None
    best = next((cb for cb in trainer.checkpoint_callbacks if cb.monitor == metric), None)
    if best is None:
        best = ModelCheckpoint(monitor=metric, mode="min", filename="best-{epoch}", auto_insert_metric_name=True)
        trainer.callbacks[:] = [cb for cb in trainer.callbacks if not _is_default_checkpoint(cb)] + [best]
    if not any(writes_last_every_epoch(cb) for cb in trainer.checkpoint_callbacks):
        trainer.callbacks.append(latest_checkpoint())
    return best


def prepare_fit(trainer: Trainer) -> None:
    """What every ``fit`` gets: a ``DivergenceGuard``; a progress bar that redraws twice a second
    instead of after every batch (which costs several percent at batch 10); and, unless a profiler
    was asked for, the ``NoOpProfiler`` in place of Lightning's equivalent but slower default."""
    if type(trainer.profiler) is PassThroughProfiler:
        trainer.profiler = NoOpProfiler()
    callbacks = trainer.callbacks
    if not any(isinstance(cb, DivergenceGuard) for cb in callbacks):
        callbacks.append(DivergenceGuard())
    for i, cb in enumerate(callbacks):
        if type(cb) is TQDMProgressBar and cb.refresh_rate == 1:  # Lightning's default bar
            callbacks[i] = ThrottledProgressBar()


def resume_last(trainer: Trainer) -> str:
    """Resolve ``--ckpt_path last`` to the newest ``last.ckpt`` of this config's runs, and log on
    into that run's folder (same version), so the best-checkpoint bookkeeping carries on too."""
    logger = trainer.logger
    root = Path(logger.root_dir) if logger is not None and hasattr(logger, "root_dir") else Path(trainer.default_root_dir)
    found = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(
            f"--ckpt_path last: no last.ckpt under {root}/version_*/checkpoints; nothing to resume, "
            "run without --ckpt_path to start afresh"
        )
    last = found[-1]
    version = last.parent.parent.name.removeprefix("version_")
    if logger is not None and hasattr(logger, "_version"):
        logger._version = int(version) if version.isdigit() else version
    print(f"resuming from {last}")
    return str(last)


def _is_default_checkpoint(callback: object) -> bool:
    return (isinstance(callback, ModelCheckpoint) and callback.monitor is None and callback.dirpath is None
            and callback.save_last is None and callback.filename is None)


def write_results(results: dict, log_dir: str | None) -> Path:
    out = Path(log_dir or ".") / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)  # atomic: a reader never sees half a file
    print(format_summary(results, out))
    return out


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
        lines.append(f"  test error: {pct('test/err')}{rmse}   test sparsity: {pct('test/sparsity')}")
    else:
        lines.append("  test: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()
                                           if k.startswith("test/") and isinstance(v, float)))
    return "\n".join(lines)


def epoch_of_run(best_epoch: int | None, epochs: int | None) -> str:
    """'best epoch 27 of 0-29': numbered from 0, as Lightning numbers them in the progress bar and
    in checkpoint names (``best-epoch=27.ckpt``)."""
    best = "-" if best_epoch is None else str(best_epoch)
    return f"best epoch {best} of 0-{epochs - 1}" if epochs else f"best epoch {best}"


def _to_float(value: object) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def _epoch_of(path: str) -> int | None:
    match = re.search(r"epoch=(\d+)", Path(path).name) if path else None
    return int(match.group(1)) if match else None


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "reproduce":
        from lightning_rect.reproduce import main as reproduce_main

        return reproduce_main(argv[1:])
    retain_freed_memory()  # no page faults on the buffers each step frees and allocates again
    try:
        RectCLI(args=args)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Leave DDP cleanly: a process group still open at interpreter exit can abort the process
    ("terminate called without an active exception") while gloo's threads are torn down."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def user_error(err: BaseException) -> LightningRectError | None:
    """The ``LightningRectError`` behind ``err``; jsonargparse wraps errors raised while instantiating."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LightningRectError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    main()
