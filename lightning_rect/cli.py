"""``python -m lightning_rect fit --config configs/digits.yaml``: LightningCLI plus the paper's protocol.

What this adds to LightningCLI:
- data sizes are linked into the model (``data.input_size -> model.init_args.in_features``,
  ``data.num_classes -> model.init_args.num_classes``), so configs never repeat them;
- ``fit`` keeps the checkpoint with the best value of the model's ``selection_metric``
  (``val/err`` for ``SparseMLP``) and a ``last.ckpt`` rewritten at every epoch end, stops a
  diverged run (``DivergenceGuard``), then evaluates the kept checkpoint on the test split, prints
  a summary and writes it as ``results.json`` in the run's log directory;
- ``--ckpt_path last`` continues the newest unfinished run in its own folder;
- problems the user can fix (unknown registry name, bad value, missing data file, bad checkpoint)
  end the program with one line naming the cause, not a traceback.

The extra callbacks are constructor arguments of the Trainer (``instantiate_trainer``); a config
that names its own ``ModelCheckpoint`` for the metric, or its own progress bar, keeps it.
"""

from __future__ import annotations

import sys
import time

from lightning import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, instantiate_class
from torch.optim import Optimizer

import lightning_rect.data  # noqa: F401  (data modules by short name: --data=DigitsDataModule)
import lightning_rect.models  # noqa: F401
from lightning_rect.bundled import resolve_config_args
from lightning_rect.callbacks import DivergenceGuard, ThrottledProgressBar
from lightning_rect.checkpoints import latest_checkpoint, writes_last_every_epoch
from lightning_rect.errors import ConfigError, LightningRectError
from lightning_rect.integrations.wandb import SaveConfigToWandb, publish_results
from lightning_rect.results import epoch_of_checkpoint, to_float, write_results
from lightning_rect.resume import resolve_last

DESCRIPTION = (
    "lightning_rect: Deep Sparse Rectifier Neural Networks (Glorot, Bordes, Bengio 2011) in PyTorch Lightning. "
    "Train with `fit --config configs/digits.yaml` (the bundled configs work from any folder; `configs DIR` writes "
    "them out); the paper's experiments: `reproduce --help`."
)


class RectCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # A rerun in the same log folder must not fail because config.yaml already exists there.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", SaveConfigToWandb)  # also into W&B runs, if any
        kwargs.setdefault("parser_kwargs", {"description": DESCRIPTION})
        self._fit_started = 0.0
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_size", "model.init_args.in_features", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit" and self.config.fit.get("ckpt_path") == "last":
            self.config.fit.ckpt_path = resolve_last(self.config.fit.trainer.get("logger"))

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.subcommand is not None:
            scheduler_with_models_optimizer(self.model, self.config_init[self.subcommand])

    def instantiate_trainer(self, **kwargs) -> Trainer:
        if self.subcommand == "fit":
            trainer_config = self.config_init.fit.trainer
            configured = trainer_config.get("callbacks") or []
            configured = configured if isinstance(configured, list) else [configured]
            kwargs["callbacks"] = configured + fit_callbacks(configured, self.model, trainer_config)
        return super().instantiate_trainer(**kwargs)

    # -- fit: then test the selected checkpoint ------------------------------------------------
    def before_fit(self) -> None:
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
            "best_val": to_float(checkpoint.best_model_score) if checkpoint is not None else None,
            "best_epoch": epoch_of_checkpoint(best_path),
            "epochs": trainer.current_epoch,
            "fit_seconds": round(fit_seconds, 2),
            "checkpoint": best_path or None,
            **{k: to_float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()},
        }
        log_dir = trainer.log_dir  # broadcasts under DDP, so every rank must ask, not rank 0 alone
        if trainer.is_global_zero:
            publish_results(trainer, results, write_results(results, log_dir))


def scheduler_with_models_optimizer(model: LightningModule, config) -> None:
    """``--lr_scheduler`` without ``--optimizer``: schedule the model's own optimizer.

    LightningCLI applies a configured scheduler only together with a configured optimizer and
    otherwise ignores it without a word; here the scheduler wraps what the model's
    ``configure_optimizers`` returns, through LightningCLI's own ``configure_optimizers``.
    """
    scheduler = config.get("lr_scheduler")
    if not scheduler or config.get("optimizer"):
        return
    scheduler = scheduler.as_dict() if hasattr(scheduler, "as_dict") else dict(scheduler)
    models_own = model.configure_optimizers

    def configure_optimizers():
        optimizer = models_own()
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"--lr_scheduler needs {type(model).__name__}.configure_optimizers to return one optimizer; "
                              "add --optimizer=... as well, or configure the scheduler in the model")
        return LightningCLI.configure_optimizers(model, optimizer, instantiate_class(optimizer, scheduler))

    model.configure_optimizers = configure_optimizers


def fit_callbacks(configured: list[Callback], model: LightningModule, trainer_config) -> list[Callback]:
    """What every CLI ``fit`` gets besides the configured callbacks, unless the config has its own:
    a ``DivergenceGuard``; a ``ThrottledProgressBar`` (the stock bar redraws after every batch, which
    costs several percent at batch 10); a ``ModelCheckpoint`` keeping the best epoch of
    ``model.selection_metric`` (``best-epoch=N.ckpt``); and ``last.ckpt`` rewritten every epoch."""
    added: list[Callback] = []
    if not any(isinstance(cb, DivergenceGuard) for cb in configured):
        added.append(DivergenceGuard())
    if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in configured):
        added.append(ThrottledProgressBar())
    if trainer_config.get("enable_checkpointing") is False:
        return added
    metric = getattr(model, "selection_metric", None)
    checkpoints = [cb for cb in configured if isinstance(cb, ModelCheckpoint)]
    if metric is not None and not any(cb.monitor == metric for cb in checkpoints):
        added.append(ModelCheckpoint(monitor=metric, mode="min", filename="best-{epoch}"))
    if not any(writes_last_every_epoch(cb) for cb in checkpoints):
        added.append(latest_checkpoint())
    return added


def selection_checkpoint(trainer: Trainer, model: LightningModule) -> ModelCheckpoint | None:
    """The ModelCheckpoint that tracks ``model.selection_metric``, if any."""
    metric = getattr(model, "selection_metric", None)
    return next((cb for cb in trainer.checkpoint_callbacks if metric is not None and cb.monitor == metric), None)


def main(args: list[str] | None = None) -> None:
    if args is None:
        # Rewritten in place, not passed as args: DDP starts its other processes from sys.argv.
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    else:
        args = resolve_config_args(args)
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
