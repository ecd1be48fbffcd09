"""``python -m lightning_rect fit --config configs/digits.yaml``: LightningCLI plus the paper's protocol.

What this adds to LightningCLI:
- data sizes are linked into the model (``data.input_size -> model.init_args.in_features``,
  ``data.num_classes -> model.init_args.num_classes``), so configs never repeat them;
- ``fit`` keeps the checkpoint with the best value of the model's ``selection_metric``
  (``val/err`` for ``SparseMLP``) and a ``last.ckpt`` rewritten at every epoch end, stops a
  diverged run (``DivergenceGuard``), then evaluates the kept checkpoint on the test split, prints
  a summary and writes it as ``results.json`` in the run's log directory;
- ``--ckpt_path last`` continues the newest unfinished run in its own folder, keeping its history
  (``metrics.csv`` up to the checkpoint's step, the first ``config.yaml``, the whole fit time); a
  checkpoint of another model kind, or one whose model settings the config changes (except
  ``lr``, which is applied), is refused before anything is written (``resume.py``);
- every checkpoint is written atomically (``checkpoint_io.AtomicCheckpointIO``, a Trainer plugin
  unless the config names its own ``CheckpointIO``);
- problems the user can fix (unknown registry name, bad value, missing data file, bad checkpoint)
  end the program with one line naming the cause, not a traceback.

The extra callbacks are constructor arguments of the Trainer (``instantiate_trainer``); a config
that names its own ``ModelCheckpoint`` for the metric, or its own progress bar, keeps it.
"""

from __future__ import annotations

import importlib
import sys
import time

from lightning import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, instantiate_class
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.plugins.io import CheckpointIO
from torch.optim import Optimizer

import lightning_rect.data  # noqa: F401  (data modules by short name: --data=DigitsDataModule)
import lightning_rect.models  # noqa: F401
from lightning_rect.app.bundled import resolve_config_args
from lightning_rect.callbacks import DivergenceGuard
from lightning_rect.app.checkpoint_io import AtomicCheckpointIO, latest_checkpoint, writes_last_every_epoch
from lightning_rect.errors import ConfigError, LightningRectError
from lightning_rect.app.wandb import SaveConfigToWandb, publish_results
from lightning_rect.app.results import epoch_of_checkpoint, to_float, write_results
from lightning_rect.app.resume import (SPECIAL_CKPT_PATHS, RunContinuity, check_checkpoint, check_data_sizes,
                                   config_filename, resolve_last, run_folder)

#: Batches between progress-bar redraws: about twice a second at the paper's minibatch of 10 on a CPU.
PROGRESS_REFRESH_STEPS = 50

#: What the CLI logs through in place of Lightning's ``CSVLogger`` (same arguments; keeps history on resume).
HISTORY_LOGGER = "lightning_rect.app.loggers.CSVLogger"

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
        self._requested_lr = None
        self._checkpoint_hparams: dict | None = None
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.input_size", "model.init_args.in_features", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # An explicit --ckpt_path file is checked against the config as the user wrote it: LightningCLI
        # next merges the checkpoint's hyperparameters into the config (and would turn a digits.yaml run
        # into a StackedDAE given a DAE checkpoint).
        subcommand = self.config.get("subcommand")
        config = self.config.get(str(subcommand)) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and str(ckpt_path) not in SPECIAL_CKPT_PATHS and "://" not in str(ckpt_path):
            self._checkpoint_hparams = check_checkpoint(str(ckpt_path), config, resuming_fit=subcommand == "fit")
            self._requested_lr = _model_arg(config, "lr") if subcommand == "fit" else None

    def before_instantiate_classes(self) -> None:
        """Everything else that can refuse a run, before anything is built or written."""
        config = self.config.get(str(self.subcommand)) if self.subcommand else None
        if config is None or self.subcommand != "fit":
            return
        refuse_fit_without_training(config.trainer)
        log_with_history(config.trainer)
        if config.get("ckpt_path") == "last":
            config.ckpt_path = resolve_last(config.trainer.get("logger"))
            self._checkpoint_hparams = check_checkpoint(config.ckpt_path, config, resuming_fit=True)
        elif self._requested_lr is not None and config.get("model") is not None:
            # the merge put the checkpoint's lr back; a resume applies the requested one (RunContinuity)
            config.model.init_args.lr = self._requested_lr
        # a resume into the same folder keeps the first run's config.yaml and adds its own next to it
        filename = config_filename(run_folder(config.trainer.get("logger")))
        self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": filename}

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.subcommand is not None:
            scheduler_with_models_optimizer(self.model, self.config_init[self.subcommand])

    def instantiate_trainer(self, **kwargs) -> Trainer:
        if self._checkpoint_hparams is not None and self.subcommand is not None:  # the model is built by now
            check_data_sizes(str(self.config[self.subcommand].ckpt_path), self._checkpoint_hparams, self.model)
        trainer_config = self.config_init[self.subcommand].trainer if self.subcommand else {}
        if self.subcommand == "fit":
            configured = trainer_config.get("callbacks") or []
            configured = configured if isinstance(configured, list) else [configured]
            kwargs["callbacks"] = configured + fit_callbacks(configured, self.model, trainer_config)
        plugins = trainer_config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = plugins + [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    # -- fit: then test the selected checkpoint ------------------------------------------------
    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        trainer = self.trainer
        continuity = next((cb for cb in trainer.callbacks if isinstance(cb, RunContinuity)), None)
        # the whole fit time of the run: before the crash (up to the checkpoint) and since the resume
        fit_seconds = continuity.fit_seconds() if continuity is not None else time.perf_counter() - self._fit_started
        if trainer.interrupted:
            print("fit was interrupted; skipping the test of the best checkpoint", file=sys.stderr)
            return
        if trainer.global_step == 0 and (continuity is None or continuity.remove_if_untrained(trainer)):
            raise ConfigError("the fit ran no training step (see trainer.limit_train_batches, max_steps, max_time), "
                              "so there is no result to record; no results.json was written")
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
            **(self.model.extra_results() if hasattr(self.model, "extra_results") else {}),
        }
        log_dir = trainer.log_dir  # broadcasts under DDP, so every rank must ask, not rank 0 alone
        if trainer.is_global_zero:
            publish_results(trainer, results, write_results(results, log_dir))
            from lightning_rect.app.plots.summary import write_summary_figure  # summary.png beside results.json

            write_summary_figure(log_dir)  # one line instead if matplotlib is missing


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


def _model_arg(config, name: str):
    model = config.get("model")
    init_args = model.get("init_args") if model is not None and hasattr(model, "get") else None
    return init_args.get(name) if init_args is not None and hasattr(init_args, "get") else None


def refuse_fit_without_training(trainer_config) -> None:
    """``max_epochs=0`` (or ``max_steps=0``) would test and record an untrained net."""
    for key in ("max_epochs", "max_steps"):
        if trainer_config.get(key) == 0:
            raise ConfigError(f"trainer.{key}=0 trains nothing, so there is no result to record (nothing was written); "
                              f"set --trainer.{key} to 1 or more, or evaluate a checkpoint with `test --ckpt_path=<.ckpt>`")


def log_with_history(trainer_config) -> None:
    """Configured Lightning ``CSVLogger``s become ``lightning_rect.app.loggers.CSVLogger`` (same arguments),
    whose ``metrics.csv`` survives a resume instead of being deleted."""
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        class_path = logger.get("class_path") if hasattr(logger, "get") else None
        if class_path and _imports_as(class_path) is LightningCSVLogger:
            logger.class_path = HISTORY_LOGGER


def _imports_as(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def fit_callbacks(configured: list[Callback], model: LightningModule, trainer_config) -> list[Callback]:
    """What every CLI ``fit`` gets besides the configured callbacks, unless the config has its own:
    a ``RunContinuity`` (fit time, history and lr across a resume); a ``DivergenceGuard``; a
    ``TQDMProgressBar`` redrawn every ``PROGRESS_REFRESH_STEPS`` batches (a redraw after every batch
    costs several percent at batch 10); a ``ModelCheckpoint`` keeping the best epoch of ``model.selection_metric``
    (``best-epoch=N.ckpt``); and ``last.ckpt`` rewritten every epoch."""
    added: list[Callback] = []
    if not any(isinstance(cb, RunContinuity) for cb in configured):
        added.append(RunContinuity())
    if not any(isinstance(cb, DivergenceGuard) for cb in configured):
        added.append(DivergenceGuard())
    if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in configured):
        added.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS))
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
    from lightning_rect.app.user_errors import check_command_line, one_line, parser_kwargs

    if args is None:
        # Rewritten in place, not passed as args: DDP starts its other processes from sys.argv.
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    else:
        args = resolve_config_args(args)
    try:
        check_command_line(sys.argv[1:] if args is None else args)
        RectCLI(args=args, parser_kwargs=parser_kwargs(DESCRIPTION))
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"error: {one_line(cause)}", file=sys.stderr)
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
    """The user-fixable problem behind ``err`` as a ``LightningRectError`` (ours, also when jsonargparse
    wrapped it; a parser error; an unreadable ``--ckpt_path``; an unwritable folder), or None for a
    bug: ``lightning_rect.app.user_errors``."""
    from lightning_rect.app.user_errors import user_error as translate

    return translate(err)


if __name__ == "__main__":
    main()
