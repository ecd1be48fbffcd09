"""``python -m lightning_rect fit --config configs/digits.yaml``: LightningCLI plus the paper's protocol.

``RectCLI`` takes LightningCLI's arguments and adds: the data sizes linked into the model
(``link_data_sizes``); ``--ckpt_path`` and ``pretrained`` read before anything is built; ``fit`` in a
claimed and locked run folder, keeping the best and the last checkpoint (written atomically), then
testing the best and writing ``results.json`` and ``summary.png``; SIGINT, SIGTERM and SIGHUP as one
line with the command that resumes the run, and exit code 130, 143 or 129 (``StopOnSignal``, also
under DDP); user errors as one line (``user_errors.py``). A config's own ``ModelCheckpoint`` for the
metric, ``Timer``, progress bar or ``CheckpointIO`` is kept.

What a command line or config may ask for is checked first (``config_files.py``): no config from a URL
(unless opted in, https only), none of megabytes or an alias bomb, no ``class_path`` that imports a
module of the current folder, no net too big for the memory. ``validate``/``test``/``predict`` never
write into an earlier run's folder, and the saved ``config.yaml`` names no fixed version and no absolute
path inside the working folder (``SaveRunConfig``).

Also: ``--import my_module`` (command line only) imports the user's module before parsing, so what it
registers (an activation, ...) is known; ``fast_dev_run`` runs its batches and writes nothing; a run
without a logger gets a run folder all the same (``<default_root_dir>/runs/<model>_<data>/version_N``);
``predict`` writes ``predictions.pt`` there; ``fit --ckpt_path <run>/checkpoints/last.ckpt`` continues
that run in its own folder, wherever it is.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shlex
import signal
import sys
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import torch
import torch.distributed
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar, Timer, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, instantiate_class
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.optim import Optimizer

import lightning_rect.data  # noqa: F401  (data modules by short name: --data=DigitsDataModule)
import lightning_rect.models  # noqa: F401
from lightning_rect.app.bundled import resolve_config_args
from lightning_rect.app.checkpoint_io import AtomicCheckpointIO, latest_checkpoint, writes_last_every_epoch
from lightning_rect.app.command_line import take_option
from lightning_rect.app.config_files import ImportGuard, cap_yaml_loading, check_config_files, set_remote_reading
from lightning_rect.app.loggers import claim_run_folder
from lightning_rect.app.parser_flags import keeping_none
from lightning_rect.app.results import (
    PredictionsFile,
    absolute_checkpoint,
    epoch_of_checkpoint,
    provenance,
    to_float,
    write_results,
)
from lightning_rect.app.resume import (
    SPECIAL_CKPT_PATHS,
    CheckpointFacts,
    RunContinuity,
    check_checkpoint,
    check_weights,
    config_filename,
    keep_out_of_earlier_runs,
    logger_entries,
    note_lost_history,
    point_logger_at,
    remove_untrained_run,
    resolve_last,
    resumed_run_folder,
)
from lightning_rect.app.run_lock import release_held_locks, run_lock
from lightning_rect.app.threads import HELP as THREADS_HELP
from lightning_rect.app.threads import apply_threads, take_threads_option
from lightning_rect.app.user_errors import (
    MAX_NAME_BYTES,
    SUBCOMMANDS,
    Stopped,
    close_match,
    one_line,
    parser_message,
    user_error,
)
from lightning_rect.app.wandb import SaveConfigToWandb, publish_results, runs_end_with_the_command
from lightning_rect.callbacks import DivergenceGuard
from lightning_rect.callbacks.firing_rates import run_folder
from lightning_rect.checkpoint import last_checkpoint_path, read_pretrained
from lightning_rect.checks import check_model_fits_in_memory
from lightning_rect.errors import ConfigError, LightningRectError
from lightning_rect.files import portable_path
from lightning_rect.lightning_attrs import process_rank, trainer_callbacks, trainer_fast_dev_run

__all__ = ["RectCLI", "link_data_sizes", "main", "user_error"]

#: Batches between progress-bar redraws: about twice a second at the paper's minibatch of 10 on a CPU.
PROGRESS_REFRESH_STEPS = 50
#: LightningCLI's arguments in order, so that RectCLI takes them positionally as LightningCLI does.
LIGHTNING_CLI_ARGS = list(inspect.signature(LightningCLI.__init__).parameters)[1:]

DESCRIPTION = (
    "lightning_rect: Deep Sparse Rectifier Neural Networks (Glorot, Bordes, Bengio 2011) in PyTorch Lightning. "
    "Train with `fit --config configs/digits.yaml` (the bundled configs work from any folder; `configs DIR` writes "
    "them out); the paper's experiments: `reproduce --help`. `--import my_module` (or a .py file's path; any "
    "number, on the command line only) imports your module first, so the activations, reconstructions or noise "
    "it registers can be named. " + THREADS_HELP
)
#: Where ``FitOutcome`` leaves, in ``trainer.callback_metrics``, what a fit reached.
OUTCOME = "lightning_rect/fit_outcome/"
#: The profilers Lightning knows by name (``--trainer.profiler=simple``).
PROFILER_NAMES = ("simple", "advanced", "pytorch", "xla")
#: Signals that stop a fit at the next batch, keep the last whole checkpoint and print how to resume.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
#: Seconds a process may take to stop after a stop signal (under DDP: after any rank got one) before it is ended.
STOP_GRACE_SECONDS = 30.0


def link_data_sizes(parser: LightningArgumentParser, subclass_mode: bool = True, in_features_check=None) -> None:
    """The model's ``in_features`` and ``num_classes`` taken from the data module's ``input_size`` and
    ``num_classes``. For any LightningCLI: call it in ``add_arguments_to_parser`` (``subclass_mode``:
    the CLI's ``subclass_mode_model``). ``in_features_check(input_size)``, if given, sees the input size
    before the model is built (and returns it)."""
    model = "model.init_args" if subclass_mode else "model"
    # A model class given outside subclass mode is linked only where it takes the argument (a model of
    # one's own may take neither); in subclass mode the class is known only once the config is read.
    if subclass_mode or takes(parser, f"{model}.in_features"):
        parser.link_arguments(
            "data.input_size", f"{model}.in_features", compute_fn=in_features_check, apply_on="instantiate"
        )
    if subclass_mode or takes(parser, f"{model}.num_classes"):
        parser.link_arguments("data.num_classes", f"{model}.num_classes", apply_on="instantiate")


def takes(parser: LightningArgumentParser, key: str) -> bool:
    """Whether ``parser`` has the argument ``key``."""
    try:
        parser.get_default(key)
    except KeyError:
        return False
    return True


class RectCLI(LightningCLI):
    """LightningCLI plus the paper's protocol (see the module's text). ``handle_signals``: a fit stops on
    SIGINT, SIGTERM and SIGHUP with one line and how to resume (``main`` asks for it; a caller that handles
    the signals itself leaves it off); ``exits_after_stop``: the process ends once a fit stopped, so later
    signals are ignored (a second Ctrl-C while it ends does not kill it half-way)."""

    def __init__(self, *args, handle_signals: bool = False, exits_after_stop: bool = False, **kwargs) -> None:
        kwargs.update(zip(LIGHTNING_CLI_ARGS, args))
        self._handle_signals, self._exits_after_stop = handle_signals, exits_after_stop
        # A rerun in the same log folder must not fail because config.yaml already exists there.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", SaveRunConfig)  # also into W&B runs, if any
        # (mypy reads subcommands' optional self as taking no instance; it takes one, or none on the class)
        self._subcommands: dict[str, set[str]] | None = None  # a subclass's own subcommands() may call ours
        offered = self.subcommands()  # type: ignore[misc]
        named = named_subcommand(kwargs.get("args"), offered)
        self._subcommands = {named: offered[named]} if named else offered
        kwargs["parser_kwargs"] = quiet_parsers(kwargs.get("parser_kwargs"), self.subcommands())  # type: ignore[misc]
        self._parsers: list[LightningArgumentParser] = []
        self._requested_lr: float | None = None
        self._checkpoint: CheckpointFacts | None = None  # what check_checkpoint found in --ckpt_path
        #: the run folder of a run without a logger (``default_root_dir``), and whether this process made it
        self._run_folder: Path | None = None
        self._made_run_folder = False
        #: the command line as given (for the resume command a stopped fit prints) and its model sizes
        self._given: list[str] = []
        self._hidden_sizes: list[int] | None = None
        #: modules of the current folder are imported only when --import names them, never for a class_path
        self._guard = ImportGuard()
        set_remote_reading()  # --config http://... is read only with LIGHTNING_RECT_ALLOW_REMOTE_CONFIG=1, https
        cap_yaml_loading()  # a YAML alias bomb or a config of megabytes is refused before it is walked
        # From the command line (args=None: a script's own CLI, or `main`), a mistake ends it in one line as
        # the `fit` command does; a W&B run its logger started ends with it (Lightning's WandbLogger leaves it
        # open, and a second RectCLI in the same process, as in a notebook, would log into it).
        from_command_line = kwargs.get("args") is None
        runs = kwargs.get("run", True)
        with (
            one_line_errors() if from_command_line else nullcontext(),
            runs_end_with_the_command() if runs else nullcontext(),
            self._guard.installed(),
        ):
            super().__init__(**kwargs)

    # Lightning's is a staticmethod; this one reads the instance's command line (and, called on the class
    # as a subclass's own staticmethod may call it, gives Lightning's four)
    def subcommands(self: Any = None) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands, or only the one the command line starts with: each one's parser takes
        the Trainer's, the model's and the data's arguments, and building the three others was most of the
        time a command spent before it read its config."""
        if self is None or self._subcommands is None:
            return LightningCLI.subcommands()
        return self._subcommands

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        self._parsers.append(parser)  # the main parser, then one per subcommand: their options name close matches
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_data_sizes(parser, self.subclass_mode_model, in_features_check=self.check_model_size)

    def check_model_size(self, in_features):
        """The net the config asks for must fit in memory: refused before its weights are allocated."""
        if self._hidden_sizes is not None and isinstance(in_features, int):
            check_model_fits_in_memory(self._hidden_sizes, in_features)
        return in_features

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        given = sys.argv[1:] if args is None else args
        if isinstance(given, (list, tuple)):
            self._given = [str(a) for a in given]
            check_config_files(self._given)  # remote, binary, too big or an alias bomb: before jsonargparse reads it
        command_line = import_user_modules(given, self._guard) if isinstance(given, (list, tuple)) else given
        if isinstance(command_line, (list, tuple)) and any(str(a).startswith("--threads") for a in command_line):
            command_line, threads = take_threads_option(command_line)
            apply_threads(threads)
        try:
            if command_line is not given and args is None:
                # LightningCLI's own parse, without its warning about args beside sys.argv: sys.argv keeps
                # --import for the processes DDP starts from it
                self.config = parser.parse_args(command_line)
            else:
                # None when it is sys.argv's own (Lightning warns about args given beside sys.argv);
                # Lightning types command_line as a list; a tuple parses as well
                super().parse_arguments(parser, None if args is None else command_line)  # type: ignore[arg-type]
        except argparse.ArgumentError as err:
            said = " ".join([*(str(cause) for cause in _causes(err)), *self._given])
            ours = self._guard.refusal_in(said) or next(
                (cause for cause in _causes(err) if isinstance(cause, LightningRectError)), None
            )
            if ours is not None:
                raise ours from None
            options = sorted({key for p in self._parsers[1:] or self._parsers for key in p.get_defaults().keys()})
            command_line = sys.argv[1:] if args is None else args if isinstance(args, (list, tuple)) else []
            raise ConfigError(parser_message(err, options, [str(a) for a in command_line])) from None
        if self._guard.refused and (refused := self._guard.refusal_in(repr(self.config))) is not None:
            raise refused  # the parser went on without it (a union of types took the text): still refused
        self.check_checkpoints()

    def check_checkpoints(self) -> None:
        """``--ckpt_path`` and ``pretrained`` read through the one loader before anything is built, so neither
        Lightning nor the model ever meets a bad file; a ``--ckpt_path`` is checked against the config as the
        user wrote it (LightningCLI next merges the checkpoint's hyperparameters into the config)."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(str(subcommand)) if subcommand else None
        if config is None:  # no subcommand: nothing to read
            return
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and str(ckpt_path) not in SPECIAL_CKPT_PATHS:
            self._checkpoint = check_checkpoint(
                str(ckpt_path), config, resuming_fit=subcommand == "fit", command_line=self._given
            )
            self._requested_lr = config.get("model.init_args.lr") if subcommand == "fit" else None
        elif subcommand == "fit" and not ckpt_path and config.get("model.init_args.pretrained"):
            read_pretrained(config.get("model.init_args.pretrained"), mmap=True)

    def before_instantiate_classes(self) -> None:
        """Everything else that can refuse a run, before anything is built or written."""
        config = self.config.get(str(self.subcommand)) if self.subcommand else None
        if config is None:
            return
        refuse_bad_trainer_values(config.trainer)
        hidden_sizes = config.get("model.init_args.hidden_sizes") if config.get("model") is not None else None
        if isinstance(hidden_sizes, (list, tuple)) and all(isinstance(h, int) and h > 0 for h in hidden_sizes):
            self._hidden_sizes = list(hidden_sizes)  # checked against memory once the data's input size is known
        if self.subcommand != "fit":
            # validate/test/predict only read a run: never into an earlier run's folder (a saved config's version)
            for note in keep_out_of_earlier_runs(config.trainer.get("logger"), str(self.subcommand)):
                if process_rank() == 0:
                    print(note, file=sys.stderr)
            return
        refuse_fit_without_training(config.trainer)
        if config.get("ckpt_path") == "last":
            config.ckpt_path = resolve_last(config.trainer.get("logger"))
            self._checkpoint = check_checkpoint(config.ckpt_path, config, resuming_fit=True)
        else:
            if self._requested_lr is not None and config.get("model") is not None:
                # the merge put the checkpoint's lr back; a resume applies the requested one (RunContinuity)
                config.model.init_args.lr = self._requested_lr
            if config.get("ckpt_path") and not config.trainer.get("fast_dev_run"):
                self.resume_in_place(config)
        if config.get("ckpt_path"):
            note_lost_history(config.trainer.get("logger"))
        # a resume into the same folder keeps the first run's config.yaml and adds its own next to it
        filename = config_filename(config.trainer.get("logger"))
        self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": filename}

    def resume_in_place(self, config) -> None:
        """An explicit ``--ckpt_path`` that is the newest checkpoint of an unfinished run folder continues that
        run there, with its history, as ``--ckpt_path last`` does, also when the folder was moved; else a new
        run folder, as Lightning does, and a note says why."""
        folder, why = resumed_run_folder(str(config.ckpt_path))
        logger = config.trainer.get("logger")
        if folder is not None and logger in (False, []):
            self._run_folder = folder
        elif folder is not None and not point_logger_at(logger, folder):
            folder, why = (
                None,
                (
                    "the configured logger keeps no run folder of its own (name "
                    "lightning_rect.app.loggers.CSVLogger in trainer.logger to continue the run in place)"
                ),
            )
        if process_rank() != 0:
            return
        if folder is not None:
            print(f"resuming from {config.ckpt_path} in its run folder {folder}")
        elif why:
            print(f"note: {why}", file=sys.stderr)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.subcommand is not None:
            scheduler_with_models_optimizer(self.model, self.config_init[self.subcommand])

    def instantiate_trainer(self, **kwargs) -> Trainer:
        if self._checkpoint is not None and self.subcommand is not None:  # the model is built by now
            check_weights(
                str(self.config[self.subcommand].ckpt_path),
                self._checkpoint,
                self.model,
                resuming_fit=self.subcommand == "fit",
            )
        trainer_config = self.config_init[self.subcommand].trainer if self.subcommand else {}
        limits = []
        if self.subcommand == "fit":
            configured = _as_list(trainer_config.get("callbacks"))
            added_callbacks = fit_callbacks(configured, self.model, trainer_config)
            kwargs["callbacks"] = configured + added_callbacks
            if default_epochs_lifted(added_callbacks, trainer_config):
                # Lightning gives an unset max_epochs 1000 epochs, but none at all once a Timer is there
                kwargs["max_epochs"] = LIGHTNING_DEFAULT_MAX_EPOCHS
                limits.append(
                    f"max_epochs={LIGHTNING_DEFAULT_MAX_EPOCHS} (Lightning's default; -1 trains without limit)"
                )
        elif self.subcommand == "predict":
            configured = _as_list(trainer_config.get("callbacks"))
            if not any(isinstance(cb, PredictionsFile) for cb in configured):
                kwargs["callbacks"] = configured + [PredictionsFile()]
        if self.subcommand and trainer_config.get("logger") in (False, []) and not trainer_config.get("fast_dev_run"):
            kwargs["default_root_dir"] = str(self.run_folder_without_logger(trainer_config))
        refuse_alike_callbacks(kwargs.get("callbacks", _as_list(trainer_config.get("callbacks"))))
        plugins = _as_list(trainer_config.get("plugins"))
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            kwargs["plugins"] = plugins + [AtomicCheckpointIO()]
        # What runs beyond the config is said once and kept in the run's config.yaml (as a comment, so
        # the file still parses as the config it is).
        added = [describe(cb) for cb in kwargs.get("callbacks", [])[len(_as_list(trainer_config.get("callbacks"))) :]]
        added += [describe(p) for p in kwargs.get("plugins", [])[len(plugins) :]] + limits
        if added:
            if process_rank() == 0:
                print(f"{self.subcommand} adds to the config: {', '.join(added)}")
            self.save_config_kwargs = {**self.save_config_kwargs, "added": tuple(added)}
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:  # Lightning's own word for a setting it refuses
            raise ConfigError(
                f"trainer: {one_line(err)}; change that setting (`{self.subcommand} --help` lists "
                "the trainer's settings)"
            ) from None

    def run_folder_without_logger(self, trainer_config) -> Path:
        """Lightning writes a run without a logger into ``default_root_dir`` (checkpoints/, config.yaml, and
        here results.json): a new ``<default_root_dir>/runs/<model>_<data>/version_N`` instead, so runs never
        mix in the working folder. Made on rank 0 only; the others learn it from rank 0 (Lightning broadcasts
        ``trainer.log_dir`` and the checkpoint folder)."""
        root = Path(trainer_config.get("default_root_dir") or ".")
        if self._run_folder is not None:  # --ckpt_path in a run folder: that one
            return self._run_folder
        data = type(self.datamodule).__name__.removesuffix("DataModule") if self.datamodule is not None else ""
        name = "_".join(n.lower() for n in (type(self.model).__name__, data) if n)
        if process_rank() != 0:
            return root
        self._run_folder, self._made_run_folder = Path(claim_run_folder(root / "runs" / name)), True
        print(f"no logger (trainer.logger=false): this run's files go to {self._run_folder}")
        return self._run_folder

    # -- fit: then test the selected checkpoint ------------------------------------------------
    def fit(self, model: LightningModule, **kwargs) -> None:
        """What ``fit`` runs in place of ``trainer.fit``: the fit, then the test of the selected checkpoint and
        ``results.json``, all in the run folder held by this process alone."""
        trainer, logger = self.trainer, self.trainer.logger
        if trainer_fast_dev_run(trainer):
            self.fast_dev_run(model, **kwargs)
            return
        # on rank 0, the run folder (the first logger's, claimed now: our CSVLogger makes a new version_N that
        # no other process can take; or the one made for a run without a logger), locked for this fit alone
        if logger is None:
            folder, made = self._run_folder if process_rank() == 0 else None, self._made_run_folder
        else:
            log_dir = getattr(logger, "log_dir", None)
            folder = Path(log_dir) if process_rank() == 0 and log_dir and "://" not in str(log_dir) else None
            made = folder is not None and (bool(getattr(logger, "claimed", False)) or not folder.exists())
        outcome: dict[str, float] = {}
        stop = (
            next((cb for cb in trainer_callbacks(trainer) if isinstance(cb, StopOnSignal)), None)
            if self._handle_signals
            else None
        )
        with ExitStack() as held:
            if folder is not None:
                held.enter_context(run_lock(folder))
            if stop is not None:  # SIGINT, SIGTERM, SIGHUP: stop at the next batch, say how to resume
                held.enter_context(
                    stop.handling(
                        trainer,
                        lambda signum, forced: self.stopped_line(signum, forced),
                        ignore_after_stop=self._exits_after_stop,
                    )
                )
            try:
                trainer.fit(model, **kwargs)
                for run_logger in trainer.loggers:  # what the fit logged stays when ddp_spawn tests in new processes
                    if hasattr(run_logger, "own_rows"):
                        run_logger.own_rows = True
                outcome = fit_outcome(trainer)
                if outcome["global_step"] == 0:
                    raise ConfigError(
                        "the fit ran no training step (see trainer.limit_train_batches, max_steps, "
                        "max_time), so there is no result to record; no results.json was written"
                    )
                self.test_and_record(model, outcome)
            except BaseException as err:
                signum = stop.signum if stop is not None else None
                # a stop signal (here, or on another DDP rank): also a peer's end seen as a collective's error
                if isinstance(err, SIGTERMException) or (
                    signum is not None and not isinstance(err, LightningRectError)
                ):
                    signum = signum or signal.SIGTERM
                    removed = made and not last_checkpoint_path(trainer) and outcome.get("global_step") is None
                    line = self.stopped_line(signum, removed=removed)
                    if removed and folder is not None:
                        remove_untrained_run(folder)  # nothing of it can be resumed: no partial run folder
                    wait_for_other_ranks(trainer, STOP_GRACE_SECONDS)
                    raise Stopped(line, signum) from None
                if made and folder is not None and outcome.get("global_step", trainer.global_step) == 0:
                    remove_untrained_run(folder)  # no litter: the folder of a run that trained nothing
                raise

    def stopped_line(self, signum: int, forced: bool = False, removed: bool = False) -> str:
        """The one line of a stopped fit: where it stopped, what is kept, the exact command that resumes it."""
        trainer = self.trainer
        name = signal.Signals(signum).name
        testing = trainer.state.fn == "test"
        where = (
            f"stopped by {name} while testing the selected checkpoint (training had finished)"
            if testing
            else f"stopped by {name} at epoch {trainer.current_epoch} step {trainer.global_step}"
        )
        if forced:
            where += f" (ended at once: {'a second signal' if stop_count(trainer) > 1 else 'it did not stop in time'})"
        last = last_checkpoint_path(trainer)
        if not last:
            gone = "; its run folder was removed" if removed else ""
            return (
                f"{where}, before its first checkpoint: nothing can be resumed{gone}; run the command again: "
                f"{self.command_line()}"
            )
        return (
            f"{where}; the last checkpoint {portable_path(last)} is whole; resume with: "
            f"{self.command_line(portable_path(last))}"
        )

    def command_line(self, ckpt_path: str | None = None) -> str:
        """The command as given (without its --ckpt_path), resuming from ``ckpt_path`` when given."""
        args, skip = [], False
        for arg in self._given:
            if skip:
                skip = False
            elif arg == "--ckpt_path":
                skip = True
            elif not arg.startswith("--ckpt_path="):
                args.append(arg)
        if ckpt_path:
            args += ["--ckpt_path", ckpt_path]
        program = "python -m lightning_rect" if Path(sys.argv[0]).name == "__main__.py" else "lightning-rect"
        return " ".join([program, *(shlex.quote(a) for a in args)])

    # -- validate, test, predict: only read a run --------------------------------------------------
    def validate(self, model: LightningModule, **kwargs):
        return self._evaluate("validate", model, **kwargs)

    def test(self, model: LightningModule, **kwargs):
        return self._evaluate("test", model, **kwargs)

    def predict(self, model: LightningModule, **kwargs):
        return self._evaluate("predict", model, **kwargs)

    def _evaluate(self, kind: str, model: LightningModule, **kwargs):
        """``trainer.<kind>``; when it fails, the folder this command made (config files, a partial metrics.csv)
        is removed: no partial run folder is left behind."""
        trainer = self.trainer
        try:
            return getattr(trainer, kind)(model, **kwargs)
        except BaseException:
            if process_rank() == 0:
                made = [Path(lg.log_dir) for lg in trainer.loggers if getattr(lg, "claimed", False) and lg.log_dir]
                made += [self._run_folder] if self._made_run_folder and self._run_folder is not None else []
                for folder in made:
                    remove_untrained_run(folder)
            raise

    def fast_dev_run(self, model: LightningModule, **kwargs) -> None:
        """Lightning's smoke test: its few batches of fit, then of the test, and nothing written (Lightning's
        fast_dev_run logs and checkpoints nothing, so there is no run folder and no result to record)."""
        trainer = self.trainer
        trainer.fit(model, **kwargs)
        trainer.test(model, datamodule=self.datamodule, verbose=False)
        if trainer.is_global_zero:
            batches = int(trainer_fast_dev_run(trainer))
            print(
                f"fast_dev_run: fit and test ran {batches} batch{'es' if batches > 1 else ''} each as a check; "
                "nothing was written (no run folder, checkpoint or results.json)",
                file=sys.stderr,
            )

    def test_and_record(self, model: LightningModule, outcome: dict[str, float]) -> None:
        trainer = self.trainer
        timer = next((cb for cb in trainer_callbacks(trainer) if isinstance(cb, Timer)), None)
        # Lightning's Timer: the time before a crash, plus since
        fit_seconds = outcome.get("fit_seconds", timer.time_elapsed("train") if timer is not None else None)
        checkpoint = selection_checkpoint(trainer, model)
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        best_score = outcome.get("best_score", checkpoint.best_model_score) if checkpoint is not None else None
        # the kept checkpoint tested, where the model has a test step (a model of one's own may have none)
        tests = type(model).test_step is not LightningModule.test_step
        test_metrics = (
            trainer.test(model, datamodule=self.datamodule, ckpt_path=best_path or None, verbose=False) if tests else []
        )
        extra_results = getattr(model, "extra_results", None)  # StackedDAE's
        results = {
            "model": type(model).__name__,
            "data": type(self.datamodule).__name__,
            "selection_metric": checkpoint.monitor if checkpoint is not None else None,
            "best_val": to_float(best_score),
            "best_epoch": epoch_of_checkpoint(best_path),
            "epochs": int(outcome["epochs"]),
            "fit_seconds": round(fit_seconds, 2) if fit_seconds is not None else None,
            "checkpoint": absolute_checkpoint(best_path),
            **{k: to_float(v) for k, v in (test_metrics[0] if test_metrics else {}).items()},
            **(extra_results() if extra_results is not None else {}),
            **provenance(),  # the version and git commit that wrote it
        }
        # this run's own folder (under MLflow or W&B first, not the root their runs share); both calls are
        # broadcasts under DDP, so every rank must ask, not rank 0 alone
        log_dir = run_folder(trainer) or trainer.log_dir
        if trainer.is_global_zero:
            path = write_results(results, log_dir)
            publish_results(trainer, results, path)
            from lightning_rect.app.plots.summary import write_summary_figure  # summary.png beside results.json

            if not trainer.loggers:
                print("summary.png was not drawn: a run without a logger has no metrics.csv to draw it from")
                return
            assert log_dir is not None  # a run with a logger has a folder (run_folder)
            try:
                write_summary_figure(log_dir)  # one line instead if matplotlib is missing
            except KeyboardInterrupt:
                raise Stopped(
                    f"interrupted while drawing summary.png; {path} is written; draw the figure "
                    f"with `lightning-rect plot {log_dir}`",
                    signal.SIGINT,
                ) from None


def import_user_modules(args: Sequence[str], guard: ImportGuard | None = None) -> Sequence[str]:
    """``args`` without its ``--import MODULE`` / ``--import=MODULE`` (any number, anywhere), each module
    imported first, in order: a module name importable from the current folder (``my_module`` for
    ``./my_module.py``, ``pkg.mod``), or a ``.py`` file's path. What it registers (an activation,
    reconstruction or noise) or defines (a model or data class) can then be named, without packaging it.
    Read from the command line only, never from a config: importing runs the module's code (``guard``, the
    CLI's ``ImportGuard``, lets these modules through). ``args`` itself when it has no ``--import``."""
    rest, modules = take_option(args, "--import")
    if None in modules:
        raise ConfigError(
            "--import needs a module: --import my_module (./my_module.py) or --import path/to/my_module.py"
        )
    for module in modules:
        import_user_module(str(module), guard)
    return rest if modules else args


def import_user_module(spec: str, guard: ImportGuard | None = None) -> None:
    """Import ``spec`` (a module name, looked up in the current folder first, or a ``.py`` file's path)."""
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--import {spec}: no such file; pass a Python file's path, or a module name")
        folder, name = path.resolve().parent, path.stem
    else:
        folder, name = Path.cwd(), spec
    # the module's folder first on the path, as `python -m` puts the current one: also in the processes
    # ddp_spawn starts (they get this path), which import the module again to unpickle what it defines
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    if guard is not None:
        guard.allow(name)
    try:
        with guard.suspend() if guard is not None else nullcontext():
            importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise  # the module was found; something it imports is missing: its own traceback
        raise ConfigError(
            f"--import {spec}: no module {name!r} in {folder} or on the Python path; pass a module of "
            "the current folder (--import my_module for ./my_module.py) or a .py file's path"
        ) from None


class FitOutcome(Callback):
    """At the end of a fit, what it reached goes into ``trainer.callback_metrics`` (``OUTCOME`` keys): the
    global step, the epochs, the training time (``Timer``) and the best score of ``metric``. A fit under
    ``ddp_spawn`` runs in processes of its own, and Lightning sends back to the process that started it
    only the weights, the first checkpoint's best path and ``callback_metrics``: its trainer stays at step
    0. ``fit_outcome`` reads them back there."""

    def __init__(self, metric: str | None) -> None:
        self.metric = metric

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values: dict[str, float] = {"global_step": trainer.global_step, "epochs": trainer.current_epoch}
        timer = next((cb for cb in trainer_callbacks(trainer) if isinstance(cb, Timer)), None)
        if timer is not None:
            values["fit_seconds"] = timer.time_elapsed("train")
        checkpoint = next(
            (
                cb
                for cb in trainer.checkpoint_callbacks
                if isinstance(cb, ModelCheckpoint) and self.metric and cb.monitor == self.metric
            ),
            None,
        )
        if checkpoint is not None and checkpoint.best_model_score is not None:
            values["best_score"] = float(checkpoint.best_model_score)
        trainer.callback_metrics.update(
            {OUTCOME + k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()}
        )


def fit_outcome(trainer: Trainer) -> dict[str, float]:
    """What the fit reached (``FitOutcome``; taken out of ``callback_metrics``), else the trainer's own values
    (a fit whose processes ended early, or without ``FitOutcome``)."""
    found = {
        key.removeprefix(OUTCOME): float(trainer.callback_metrics.pop(key))
        for key in [k for k in trainer.callback_metrics if k.startswith(OUTCOME)]
    }
    return found if "global_step" in found else {"global_step": trainer.global_step, "epochs": trainer.current_epoch}


def named_subcommand(args, offered: Collection[str]) -> str | None:
    """The subcommand of ``offered`` a command line (``args``, else ``sys.argv``) starts with; None if it
    starts otherwise."""
    given = sys.argv[1:] if args is None else args
    first = given[0] if isinstance(given, (list, tuple)) and given else None
    return first if first in offered else None


def quiet_parsers(given: dict | None, subcommands: Iterable[str] = SUBCOMMANDS) -> dict:
    """``parser_kwargs`` whose parsers raise their errors (``parse_arguments`` words them in one line)
    instead of printing the whole usage and exiting, for the main parser and those of ``subcommands``;
    a subcommand's whose parser is not built is left out."""
    given, quiet, subcommands = dict(given or {}), {"exit_on_error": False}, list(subcommands)
    return {
        **quiet,
        **{k: v for k, v in given.items() if k not in {*SUBCOMMANDS, *subcommands}},
        **{name: {**quiet, **given.get(name, {})} for name in subcommands},
    }


class StopOnSignal(Callback):
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP stop a fit at the end of the current batch, as Lightning stops on
    SIGTERM: the last whole checkpoint is kept, the lock released, and the CLI prints one line with the
    command that resumes the run, then exits with 128 + the signal's number (130, 143, 129).

    Under DDP a signal may reach one process only: every ``check_every_n_steps`` training batches the ranks
    agree (one all-reduce) whether any got one, and all stop at that same batch. Lightning's own SIGTERM
    notice, which broadcasts from inside the signal handler and so hangs when another rank is in a collective,
    is left out. A process still running ``STOP_GRACE_SECONDS`` after a stop was requested, or that gets a
    second signal, prints the line and ends at once (checkpoints are written atomically: none is left half).
    Handlers are set only where a signal still has its default handler (not where ``nohup`` ignores SIGHUP,
    nor where the caller handles SIGTERM itself)."""

    def __init__(self, check_every_n_steps: int = 10) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.signum: int | None = None
        self.signals = 0
        self._trainer: Trainer | None = None
        self._line = None
        self._watchdog: threading.Timer | None = None

    def __getstate__(self) -> dict:  # ddp_spawn pickles callbacks: not this process's trainer, line or timer
        return {**self.__dict__, "_trainer": None, "_line": None, "_watchdog": None}

    @contextmanager
    def handling(self, trainer: Trainer, line, ignore_after_stop: bool = False) -> Iterator[StopOnSignal]:
        """Our handlers for the length of the block; ``line(signum, forced)`` is the line a forced end prints;
        ``ignore_after_stop``: once stopped, the signals are ignored (the process is about to end) instead of
        given back their handlers."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                    previous[signum] = signal.signal(signum, self._handle)
        if signal.SIGTERM in previous:
            connector = trainer._signal_connector  # Lightning's private notifier method, replaced on purpose:
            connector._sigterm_notifier_fn = _NoticeElsewhere(connector)  # type: ignore[method-assign,assignment]
        self._trainer, self._line = trainer, line
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_IGN if ignore_after_stop and self.signum is not None else handler)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._trainer, self._line, self._watchdog = None, None, None

    def _handle(self, signum: int, frame) -> None:
        self.signals += 1
        if self.signum is not None:  # a second signal: end now
            self._end_now(signum)
        self.signum = signum
        trainer = self._trainer
        if trainer is not None and trainer.world_size <= 1:
            trainer._signal_connector.received_sigterm = True  # Lightning stops at the end of this batch
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        if self._watchdog is None and self._trainer is not None:
            self._watchdog = threading.Timer(STOP_GRACE_SECONDS, self._end_now, args=(self.signum,))
            self._watchdog.daemon = True
            self._watchdog.start()

    def _end_now(self, signum: int) -> None:
        try:
            line = self._line(self.signum or signum, True) if self._line is not None else ""
        except Exception:  # noqa: BLE001 - the line is a courtesy; ending is what matters
            line = ""
        if process_rank() == 0:
            print(line or f"stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        release_held_locks()
        os._exit(128 + int(self.signum or signum))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            if (batch_idx + 1) % self.check_every_n_steps:
                return
            requested = torch.tensor([int(self.signum or 0)], dtype=torch.int32, device=trainer.strategy.root_device)
            torch.distributed.all_reduce(requested, op=torch.distributed.ReduceOp.MAX)
            agreed = int(requested.item())
            if not agreed:
                return
            if self.signum is None:
                self.signum = agreed
                self._start_watchdog()
        elif self.signum is None:
            return
        trainer._signal_connector.received_sigterm = True  # all ranks, at this same batch


class _NoticeElsewhere:
    """Stands in for Lightning's SIGTERM notice in the process where ``StopOnSignal`` handles SIGTERM; in
    another process (ddp_spawn's, which gets a pickled copy) it is Lightning's own notice."""

    def __init__(self, connector) -> None:
        self.connector, self.pid = connector, os.getpid()

    def __call__(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            type(self.connector)._sigterm_notifier_fn(self.connector, signum, frame)


def stop_count(trainer: Trainer) -> int:
    return next((cb.signals for cb in trainer_callbacks(trainer) if isinstance(cb, StopOnSignal)), 0)


def wait_for_other_ranks(trainer: Trainer, timeout: float) -> None:
    """The DDP processes this one started (rank 0 of ``ddp``) end with it: waited for, then killed."""
    import subprocess
    import time

    procs = getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


class SaveRunConfig(SaveConfigToWandb):
    """The CLI's ``config.yaml`` (and W&B config): the run's config without a fixed logger ``version`` (a
    ``validate``/``test`` or a new ``fit`` run with it would write into this run's folder) and with the
    paths inside the working folder relative (a copy of the run folder must not point at the original)."""

    def __init__(self, *args, added: Sequence[str] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.added = tuple(added)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # rank 0, once, right after config.yaml is written and before W&B attaches it: what runs beyond
        # the config, above it
        path = Path(self._log_dir or ".") / self.config_filename
        if self.added and self.save_to_log_dir and path.is_file():
            path.write_text(f"# {ADDED_NOTE}: {', '.join(self.added)}\n" + path.read_text())
        super().save_config(trainer, pl_module, stage)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved:
            self.config = portable_config(self.config)
        first = trainer.loggers[0] if trainer.loggers else None
        if (
            first is None
            or trainer_fast_dev_run(trainer)
            or isinstance(first, (CSVLogger, TensorBoardLogger))
            or self.already_saved
            or not self.save_to_log_dir
        ):
            super().setup(trainer, pl_module, stage)
            return
        # Another logger first (MLflow, W&B): trainer.log_dir is the root all its runs share, so the
        # config goes to this run's own folder, beside its checkpoints, results.json and firing rates.
        folder = run_folder(trainer)  # every rank asks: a broadcast
        self._log_dir = folder
        if trainer.is_global_zero:
            assert folder is not None  # a logger and no fast_dev_run: run_folder names one
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                os.path.join(folder, self.config_filename),
                **keeping_none(),
                overwrite=self.overwrite,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


#: The comment above a saved config.yaml that names what the CLI added to the config.
ADDED_NOTE = "added by the CLI, not part of this config"


def describe(obj: object) -> str:
    """A callback or plugin in a few words: its class, and what tells two of a kind apart."""
    name = type(obj).__name__
    if isinstance(obj, ModelCheckpoint):
        return f"{name}({obj.filename or 'last'}" + (f" on {obj.monitor}" if obj.monitor else "") + ")"
    if isinstance(obj, TQDMProgressBar):
        return f"{name}(refresh_rate={obj.refresh_rate})"
    return name


#: Config paths written relative to the working folder in a saved config (when they lie in or beside it).
PORTABLE_KEYS = ("trainer.default_root_dir", "ckpt_path", "model.init_args.pretrained", "data.init_args.data_dir")


def portable_config(config):
    """A copy of ``config`` that names no fixed logger version and no absolute path inside the working folder."""
    config = config.clone() if hasattr(config, "clone") else config
    for _, init_args in logger_entries(config.get("trainer.logger") if config.get("trainer") is not None else None):
        if init_args.get("version") is not None:
            init_args["version"] = None
        if isinstance(init_args.get("save_dir"), (str, os.PathLike)) and init_args.get("save_dir"):
            init_args["save_dir"] = portable_path(init_args["save_dir"])
    for key in PORTABLE_KEYS:
        with suppress(KeyError, AttributeError, TypeError):
            value = config.get(key)
            if (
                isinstance(value, (str, os.PathLike))
                and value
                and "://" not in str(value)
                and str(value) not in SPECIAL_CKPT_PATHS
            ):
                config[key] = portable_path(value)
    return config


def scheduler_with_models_optimizer(model: LightningModule, config) -> None:
    """``--lr_scheduler`` without ``--optimizer`` (which LightningCLI ignores without a word): the scheduler
    wraps the model's own optimizer, through LightningCLI's ``configure_optimizers``."""
    scheduler = config.get("lr_scheduler")
    if not scheduler or config.get("optimizer"):
        return
    scheduler = scheduler.as_dict() if hasattr(scheduler, "as_dict") else dict(scheduler)
    models_own = model.configure_optimizers

    def configure_optimizers():
        optimizer = models_own()
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(
                f"--lr_scheduler needs {type(model).__name__}.configure_optimizers to return one optimizer; "
                "add --optimizer=... as well, or configure the scheduler in the model"
            )
        return LightningCLI.configure_optimizers(model, optimizer, instantiate_class(optimizer, scheduler))

    model.configure_optimizers = configure_optimizers  # type: ignore[method-assign]  # replaced on purpose


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def refuse_bad_trainer_values(trainer_config) -> None:
    """What Lightning would refuse with a traceback, or a file system with an OSError: one line each."""
    for key in ("max_epochs", "max_steps"):
        value = trainer_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < -1:
            raise ConfigError(
                f"trainer.{key}={value}: must be an integer >= 1, or -1 for no limit; "
                f"set --trainer.{key}=30, for example"
            )
    profiler = trainer_config.get("profiler")
    if isinstance(profiler, str) and profiler.lower() not in PROFILER_NAMES:
        raise ConfigError(
            f"trainer.profiler={profiler!r} is not a profiler{close_match(profiler, PROFILER_NAMES)}; "
            f"pass one of {', '.join(PROFILER_NAMES)}, or the class_path of a "
            "lightning.pytorch.profilers.Profiler such as lightning.pytorch.profilers.SimpleProfiler"
        )
    for _, init_args in logger_entries(trainer_config.get("logger")):
        for key in ("name", "version", "sub_dir"):
            value = init_args.get(key)
            if isinstance(value, str) and len(value.encode()) > MAX_NAME_BYTES:
                raise ConfigError(
                    f"trainer.logger.init_args.{key} is {len(value.encode())} bytes long, more than the "
                    f"{MAX_NAME_BYTES} a folder name may be ({value[:40]}...); shorten it"
                )


def _causes(err: BaseException | None):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def refuse_fit_without_training(trainer_config) -> None:
    """``max_epochs=0`` (or ``max_steps=0``) would test and record an untrained net."""
    for key in ("max_epochs", "max_steps"):
        if trainer_config.get(key) == 0:
            raise ConfigError(
                f"trainer.{key}=0 trains nothing, so there is no result to record (nothing was written); "
                f"set --trainer.{key} to 1 or more, or evaluate a checkpoint with `test --ckpt_path=<.ckpt>`"
            )


def refuse_alike_callbacks(callbacks: list[Callback]) -> None:
    """Lightning refuses two stateful callbacks with one state key (two ``EarlyStopping`` on one
    metric, e.g. configs/mnist.yaml, which stops early, given with callbacks/early_stopping.yaml):
    say which, and the fix, before it does so with a traceback."""
    seen: set[str] = set()
    for callback in callbacks:
        if not is_overridden("state_dict", instance=callback, parent=Callback):
            continue
        if callback.state_key in seen:
            hint = (
                "configs/mnist.yaml already stops early on val/err; keep one, e.g. leave out --config "
                "callbacks/early_stopping.yaml"
                if isinstance(callback, EarlyStopping)
                else "keep one: leave out the extra --config or --trainer.callbacks+"
            )
            raise ConfigError(
                f"two {type(callback).__name__} callbacks with the same settings ({callback.state_key}): "
                f"the configs given together add it twice ({hint})"
            )
        seen.add(callback.state_key)


#: What Lightning trains for when neither max_epochs nor max_steps is set (lightning.pytorch.loops.utilities)
LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


def fit_callbacks(configured: list[Callback], model: LightningModule, trainer_config) -> list[Callback]:
    """What ``fit`` adds unless the config has its own: ``RunContinuity``, ``DivergenceGuard``, a ``Timer`` (its
    state in each checkpoint carries the fit time across a resume), a progress bar redrawn every
    ``PROGRESS_REFRESH_STEPS`` batches, ``best-epoch=N.ckpt`` of ``model.selection_metric``, ``last.ckpt``."""

    def missing(kind: type) -> bool:
        return not any(isinstance(cb, kind) for cb in configured)

    added: list[Callback] = [kind() for kind in (RunContinuity, DivergenceGuard, StopOnSignal) if missing(kind)]
    added.append(FitOutcome(getattr(model, "selection_metric", None)))
    if trainer_config.get("max_time") is None and missing(Timer):
        added.append(Timer())
    if trainer_config.get("enable_progress_bar") is not False and missing(ProgressBar):
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


def default_epochs_lifted(added: list[Callback], trainer_config) -> bool:
    """Whether a Timer ``fit`` added would turn an unset ``max_epochs`` (Lightning: 1000) into no limit."""
    unset = trainer_config.get("max_epochs") is None and trainer_config.get("max_steps", -1) in (-1, None)
    return unset and any(isinstance(cb, Timer) for cb in added)


def selection_checkpoint(trainer: Trainer, model: LightningModule) -> ModelCheckpoint | None:
    """The ModelCheckpoint that tracks ``model.selection_metric``, if any."""
    metric = getattr(model, "selection_metric", None)
    return next(
        (
            cb
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, ModelCheckpoint) and metric is not None and cb.monitor == metric
        ),
        None,
    )


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A mistake the user can fix (a bad value, a missing file, an unknown option) ends the command with
    one ``error:`` line and exit code 2; a bug keeps its traceback; a stop by a signal is the caller's."""
    try:
        yield
    except Stopped:
        raise
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"error: {one_line(cause)}", file=sys.stderr)
        sys.exit(2)


def main(args: list[str] | None = None) -> None:
    if args is None:
        # Rewritten in place, not passed as args: DDP starts its other processes from sys.argv.
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    else:
        args = resolve_config_args(args)
    try:
        with one_line_errors():
            # the command's description (reproduce, configs, plot) is its own, not a RectCLI script's
            RectCLI(
                args=args,
                parser_kwargs={"description": DESCRIPTION},
                handle_signals=True,
                exits_after_stop=args is None,
            )
    except Stopped as stop:
        if process_rank() == 0:  # under DDP every rank is stopped; one line says so
            print(one_line(stop), file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        # leave DDP cleanly: a process group open at exit can abort the process while gloo's threads end
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
