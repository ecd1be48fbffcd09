"""Weights & Biases: the run's full config at the start, the ``results.json`` summary at the end.

Lightning's ``WandbLogger`` already sends every logged metric. Two things it cannot know come
from the CLI instead:

- the full resolved config (what LightningCLI saves as ``config.yaml``). ``SaveConfigToWandb``
  puts it into the W&B run config once, as flat dotted keys that are exactly the command-line
  names (``model.init_args.l1``, ``trainer.max_epochs``), which are also the names sweeps use for
  their parameters: a swept value and its config entry share one key. ``config.yaml`` itself is
  attached to the run as a file, so a run can be reproduced with ``fit --config config.yaml``.
  Lightning's own hyperparameter logging would add a second, partial copy of the model's
  arguments under bare names (``l1``, ``hidden_sizes``); the ``WandbLogger`` of this module
  (used by ``callbacks/wandb.yaml``) leaves that out once the full config is in.
- the ``results.json`` summary (best validation score, test metrics of the selected checkpoint,
  checkpoint path, fit time): ``publish_results`` writes it into the run summary and attaches the
  file. The summary's ``test/*`` values are then those of the selected checkpoint.

Nothing here runs unless a ``WandbLogger`` is among the trainer's loggers, and only rank 0
talks to W&B. A run the command's logger started ends with the command (``runs_end_with_the_command``):
Lightning's ``WandbLogger`` leaves it open, and the next command in the same Python process (a notebook,
a loop over configs) would log into it. ``WANDB_MODE=offline`` and ``WANDB_MODE=disabled`` need no code change:
offline runs are written under ``<save_dir>/wandb/offline-run-*`` (upload later with
``wandb sync``; the tests read one back with ``tests/helpers/wandb_log.py``), disabled runs log
nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_rect.app.parser_flags import keeping_none


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``; skips Lightning's partial hyperparameter copy once the CLI has
    put the full config into the run (``SaveConfigToWandb``). Used outside the CLI it behaves
    exactly like Lightning's."""

    full_config_logged = False

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if not self.full_config_logged:
            super().log_hyperparams(params)


def wandb_loggers(trainer: Trainer) -> list[_LightningWandbLogger]:
    """The trainer's W&B loggers (Lightning's class or ours)."""
    return [logger for logger in trainer.loggers if isinstance(logger, _LightningWandbLogger)]


class SaveConfigToWandb(SaveConfigCallback):
    """LightningCLI's ``SaveConfigCallback`` (writes ``config.yaml`` to the log folder), plus the
    same config into every W&B logger. Lightning calls ``save_config`` on rank 0 only, once."""

    _log_dir: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved:
            # Under DDP ``trainer.log_dir`` is a broadcast: every rank asks here, because
            # ``save_config`` runs on rank 0 alone, where asking would wait forever.
            self._log_dir = trainer.log_dir
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        config = flat_config(self.parser, self.config, pl_module)
        saved = Path(self._log_dir or ".") / self.config_filename if self.save_to_log_dir else None
        for logger in loggers:
            run = logger.experiment
            # Keys a sweep already set are locked in the run config; they hold the same values.
            run.config.update({k: v for k, v in config.items() if k not in run.config}, allow_val_change=True)
            if saved is not None:
                attach_file(run, saved)
            if isinstance(logger, WandbLogger):
                logger.full_config_logged = True


def flat_config(parser: Any, config: Any, pl_module: LightningModule | None = None) -> dict[str, Any]:
    """``{dotted command-line key: JSON value}`` of a parsed LightningCLI config.

    Values come from the parser's own dump (what ``config.yaml`` holds), so paths, class paths and
    callbacks serialise exactly as in the saved file. Dict-valued arguments (``activation_args``)
    stay one entry. Model arguments the CLI links from the data (``in_features``, ``num_classes``)
    are not in the config; they are taken from the instantiated model.
    """
    dumped = json.loads(_dump_json(parser, config))
    flat: dict[str, Any] = {}
    for key in config.keys():
        node: Any = dumped
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            flat[key] = node
    if pl_module is not None:
        prefix = "model.init_args." if "model.class_path" in flat else "model."
        for name, value in pl_module.hparams_initial.items():
            if not name.startswith("_"):
                flat.setdefault(prefix + name, _json_value(value))
    return flat


def _dump_json(parser: Any, config: Any) -> str:
    """``parser.dump`` keeping ``None`` values."""
    return parser.dump(config, format="json", **keeping_none())


def publish_results(trainer: Trainer, results: dict[str, Any], results_path: str | Path) -> None:
    """Put ``results`` (what ``results.json`` holds) into the summary of every W&B run of the
    trainer, and attach ``results_path``. Call it on rank 0 (the CLI does, after writing the file)."""
    results_path = Path(results_path)
    for logger in wandb_loggers(trainer):
        run = logger.experiment
        run.summary.update({k: _json_value(v) for k, v in results.items() if v is not None})
        attach_file(run, results_path)


def attach_file(run: Any, path: Path) -> None:
    """Attach a copy of ``path`` to the run (uploaded now, or by ``wandb sync`` for offline runs).

    ``run.save`` alone would symlink the file: an offline run would then lose it when the log
    folder is moved or deleted before the sync. Saving the copy records it in the run.
    """
    run_dir = getattr(run, "dir", None)
    if path.is_file() and run_dir and Path(run_dir).is_dir():
        copy = Path(run_dir) / path.name
        shutil.copyfile(path, copy)
        run.save(str(copy), base_path=str(run_dir), policy="now")


def _json_value(value: Any) -> Any:
    """``value`` as W&B stores it: JSON types as they are, anything else as its string."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    return json.loads(json.dumps(value, default=str))


@contextlib.contextmanager
def runs_end_with_the_command() -> Iterator[None]:
    """Finish the W&B run that started inside the block (marked failed if the block raised), so that the
    next command in this process starts a run of its own. A run that was open before is the caller's and
    stays open; W&B is never imported here."""
    before = getattr(sys.modules.get("wandb"), "run", None)
    failed = True
    try:
        yield
        failed = False
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None and wandb.run is not before:
            wandb.finish(exit_code=1 if failed else 0)
