"""``fit --ckpt_path``: which run a resume continues, whether the checkpoint fits the config, and
what a resumed fit carries over.

``--ckpt_path last`` resumes the newest unfinished run under ``<save_dir>/<name>/`` (one with a
``checkpoints/last.ckpt`` and no ``results.json``), in its own folder; so does ``--ckpt_path
<run>/checkpoints/last.ckpt`` (the newest checkpoint of an unfinished run), wherever the folder is now
(``resumed_run_folder``). A checkpoint of another model
kind, or a changed model setting other than ``lr`` (or ``optimizer``/``lr_scheduler``) and
``fused_sgd``, is refused before anything is built; a changed ``lr`` is applied, printed and logged (``RunContinuity``).
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lightning_rect.app.results import RESULTS_FILE
from lightning_rect.checkpoint import MODEL_KEY, load_checkpoint_file, nonfinite_weights
from lightning_rect.errors import CheckpointError

#: Model settings a resume may change: applied to the restored optimizer (``RunContinuity``).
APPLIED_ON_RESUME = ("lr",)
#: Model settings a resume ignores: ``pretrained`` is read only by a fit from scratch; the sizes
#: linked from the data are not in the config (a mismatch fails when the weights are loaded).
UNUSED_ON_RESUME = ("pretrained", "in_features", "num_classes")
#: Model settings that compute the same step another way (the optimizer's state is the same): a run
#: started plainly may go on with ``fused_sgd`` and back.
SAME_STEP_ON_RESUME = ("fused_sgd",)
#: Checkpoint names Lightning resolves itself.
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
#: The class paths jsonargparse gives Lightning's own CSVLogger.
LIGHTNINGS_CSV_LOGGER = ("lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.csv_logs.CSVLogger")
#: Loggers whose run folder is ``save_dir/name/version``: a resume can point them back at a run folder.
FOLDER_LOGGERS = ("CSVLogger", "TensorBoardLogger")


def logger_entries(logger_config: Any) -> list[tuple[Any, Any]]:
    """(class_path, init_args) of each configured logger that has init_args (namespaces or dicts)."""
    entries = []
    for logger in logger_config if isinstance(logger_config, list) else [logger_config]:
        class_path = logger.get("class_path") if isinstance(logger, dict) else getattr(logger, "class_path", None)
        init_args = logger.get("init_args") if isinstance(logger, dict) else getattr(logger, "init_args", None)
        if init_args is not None and hasattr(init_args, "get"):
            entries.append((class_path, init_args))
    return entries


def run_root(logger_config: Any) -> tuple[Any, Path] | None:
    """(init_args namespace, ``save_dir/name``) of the first configured logger that has a ``save_dir``."""
    for _, init_args in logger_entries(logger_config):
        if init_args.get("save_dir"):
            return init_args, Path(init_args["save_dir"]) / str(init_args.get("name") or "lightning_logs")
    return None


def keep_out_of_earlier_runs(logger_config: Any, command: str) -> list[str]:
    """``validate``/``test``/``predict`` only read a run: a logger whose fixed ``version`` names a folder that
    already holds files (a run's saved config names its own) gets a new version instead; the notes say so."""
    notes = []
    for class_path, init_args in logger_entries(logger_config):
        version = init_args.get("version")
        if version is None or _class_name(class_path) not in FOLDER_LOGGERS or not init_args.get("save_dir"):
            continue
        name = str(init_args.get("name") or "lightning_logs")
        folder = Path(init_args["save_dir"]) / name / (version if isinstance(version, str) else f"version_{version}")
        if folder.is_dir() and any(folder.iterdir()):
            init_args["version"] = None
            notes.append(
                f"note: {folder} holds the files of an earlier run, so this {command} writes into a new "
                f"version folder beside it and leaves that run as it is"
            )
    return notes


def unfinished_run(root: Path) -> Path:
    """The newest ``last.ckpt`` under ``root/version_*`` whose run has no ``results.json``; for a run whose
    ``last.ckpt`` was never written whole (a full disk, a kill during its first write), its newest other
    checkpoint that loads."""
    found = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    unfinished = [p for p in found if not (p.parent.parent / RESULTS_FILE).exists()]
    if unfinished:
        return unfinished[-1]
    others = sorted(
        (
            p
            for p in root.glob("version_*/checkpoints/*.ckpt")
            if not (p.parent.parent / RESULTS_FILE).exists() and whole_checkpoint(p)
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if others:
        return others[-1]
    # a run killed before its first epoch ended has neither: nothing of it can be resumed
    stopped = sorted(
        (d for d in root.glob("version_*") if d.is_dir() and not (d / RESULTS_FILE).exists()),
        key=lambda d: d.stat().st_mtime,
    )
    early = f"; {stopped[-1]} stopped before its first checkpoint, so it cannot be resumed" if stopped else ""
    where = (
        f"every run under {root} with a last.ckpt has finished ({found[-1].parent.parent / RESULTS_FILE} exists)"
        if found
        else f"no last.ckpt under {root}/version_*/checkpoints"
    )
    raise CheckpointError(
        f"--ckpt_path last: {where}{early}; nothing to resume and nothing was changed; "
        "run without --ckpt_path to start a new run"
    )


def resolve_last(logger_config: Any) -> str:
    """Path of the checkpoint to resume; sets the configured logger's ``version`` to that run's."""
    found = run_root(logger_config)
    if found is None:
        raise CheckpointError(
            "--ckpt_path last needs a logger with a save_dir in the config (e.g. trainer.logger: "
            "CSVLogger with save_dir and name, as in configs/*.yaml) to know where the runs are; "
            "or pass the .ckpt path itself"
        )
    init_args, root = found
    last = unfinished_run(root)
    version = last.parent.parent.name.removeprefix("version_")
    init_args["version"] = int(version) if version.isdigit() else last.parent.parent.name
    why = " (its last.ckpt was never written whole)" if last.name != "last.ckpt" else ""
    print(f"resuming from {last}{why}")
    return str(last)


def whole_checkpoint(path: Path) -> bool:
    """Whether ``path`` loads as a Lightning checkpoint (a write cut short does not)."""
    try:
        load_checkpoint_file(path, lightning=True, mmap=True)
        return True
    except Exception:  # noqa: BLE001 - any failure: not a resume point
        return False


def resumed_run_folder(ckpt_path: str) -> tuple[Path | None, str | None]:
    """For an explicit ``--ckpt_path``: (the run folder it continues in place, None), or (None, why a new run
    folder, or None when the checkpoint is in no run folder). In place: ``<run>/checkpoints/<name>.ckpt``
    where ``<run>`` holds the ``config.yaml`` of a run of this CLI, no ``results.json`` (a finished run is
    never reopened) and no newer checkpoint (resuming an earlier one there would write over the later
    history)."""
    path = Path(ckpt_path)
    folder = path.parent.parent
    if "://" in ckpt_path or path.parent.name != "checkpoints" or not (folder / "config.yaml").is_file():
        return None, None
    keep = "so the resume starts a new run folder and leaves that one as it is"
    if (folder / RESULTS_FILE).exists():
        return None, f"{folder} is a finished run (it has {RESULTS_FILE}), {keep}"
    newer = [p for p in path.parent.glob("*.ckpt") if p.stat().st_mtime > path.stat().st_mtime]
    if newer:
        newest = max(newer, key=lambda p: p.stat().st_mtime)
        return None, (
            f"{path.name} is not the newest checkpoint of {folder} ({newest.name} is), {keep}; "
            f"--ckpt_path {newest} continues that run in place"
        )
    return folder, None


def point_logger_at(logger_config: Any, folder: Path) -> bool:
    """Point the first configured logger that keeps its run in ``save_dir/name/version`` (``FOLDER_LOGGERS``)
    at ``folder``; False when there is none."""
    for class_path, init_args in logger_entries(logger_config):
        if _class_name(class_path) not in FOLDER_LOGGERS:
            continue
        version = folder.name.removeprefix("version_")
        init_args["save_dir"], init_args["name"] = str(folder.parent.parent), folder.parent.name
        init_args["version"] = int(version) if folder.name.startswith("version_") and version.isdigit() else folder.name
        return True
    return False


def config_filename(logger_config: Any, default: str = "config.yaml") -> str:
    """``config.yaml``, or ``config.resume-<k>.yaml`` when the configured logger's fixed run folder already
    holds one: the first run's config is never overwritten, each resume's is kept next to it."""
    found = run_root(logger_config)
    version = found[0].get("version") if found is not None else None  # None: a new folder
    folder = (
        found[1] / (version if isinstance(version, str) else f"version_{version}")
        if found is not None and version is not None
        else None
    )
    if folder is None or not (folder / default).exists():
        return default
    k = 1
    while (folder / f"config.resume-{k}.yaml").exists():
        k += 1
    return f"config.resume-{k}.yaml"


# -- does the checkpoint fit the config? (before anything is built) -----------------------------------


@dataclass
class CheckpointFacts:
    """What ``check_checkpoint`` read from a ``--ckpt_path``, for ``check_weights`` once the model is built."""

    hparams: dict
    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    optimizer_state: bool = True


#: Model settings validate/test/predict may set on the command line apart from the checkpoint's.
EVALUATION_MAY_CHANGE = ("lr", "momentum", "optimizer", *SAME_STEP_ON_RESUME, *UNUSED_ON_RESUME)


def check_checkpoint(
    path: str, fit_config: Any, resuming_fit: bool, command_line: list[str] | tuple = ()
) -> CheckpointFacts:
    """Refuse, in one line, a checkpoint that another model kind wrote, one whose weights are not finite, one
    whose settings differ from those given on the command line (``validate``/``test``/``predict``, which
    take the checkpoint's), or (for ``fit``) one whose model settings differ from the config's in anything
    but ``lr``; returns its hyperparameters and weight shapes (for ``check_weights``)."""
    checkpoint = load_checkpoint_file(path, what="--ckpt_path", lightning=True, mmap=True)
    model_config = fit_config.get("model")
    ours = _class_name(model_config.get("class_path") if model_config is not None else None)
    hparams = checkpoint.get("hyper_parameters") or {}
    state = checkpoint.get("state_dict") if isinstance(checkpoint.get("state_dict"), dict) else {}
    facts = CheckpointFacts(hparams, _shapes(state), "optimizer_states" in checkpoint)
    if bad := nonfinite_weights(state):
        key, count = bad[0]
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise CheckpointError(
            f"--ckpt_path {path} holds NaN or infinite weights ({count} in {key}{more}): it was "
            "saved after training diverged, so nothing can be resumed or evaluated from it; pass an "
            "earlier checkpoint of that run (its best-epoch=<N>.ckpt), or start a new run with a "
            "lower learning rate"
        )
    theirs = checkpoint.get(MODEL_KEY) or _class_name(hparams.get("_class_path"))
    if ours and theirs and ours != theirs:
        hint = (
            f"; to start a {ours} from this pre-trained {theirs}, drop --ckpt_path and pass "
            f"--model.init_args.pretrained={path}"
            if theirs == "StackedDAE"
            else f"; resume it with the config of the {theirs} run that wrote it"
        )
        raise CheckpointError(
            f"--ckpt_path {path} holds a {theirs} checkpoint but the config trains a {ours}: "
            f"a checkpoint resumes only the model kind that wrote it{hint}"
        )
    if model_config is None:
        return facts
    if not resuming_fit:
        refuse_changed_on_command_line(path, hparams, model_config, command_line)
        return facts
    init_args = _plain(model_config.get("init_args")) or {}
    changed = [
        f"{k}={_show(hparams[k])} -> {_show(init_args[k])}"
        for k in init_args.keys()
        if k in hparams
        and not k.startswith("_")
        and k not in APPLIED_ON_RESUME + UNUSED_ON_RESUME + SAME_STEP_ON_RESUME
        and _plain(hparams[k]) != _plain(init_args[k])
    ]
    changed += changed_sections(Path(path), fit_config)
    if changed:
        raise CheckpointError(
            f"--ckpt_path {path}: the config changes what the checkpoint was trained with ({'; '.join(changed)}); "
            f"a resume may change only {', '.join(APPLIED_ON_RESUME)} (applied from the checkpoint's step on) and "
            f"{', '.join(SAME_STEP_ON_RESUME)}: "
            "drop the other changes, or start a new run without --ckpt_path"
        )
    return facts


def refuse_changed_on_command_line(path: str, hparams: dict, model_config: Any, command_line) -> None:
    """validate/test/predict build the model the checkpoint was trained as (LightningCLI puts its settings
    over the config's): a model setting given on the command line that differs would be dropped silently."""
    given = {
        m.group(1)
        for arg in command_line
        if (m := re.match(r"--model\.(?:init_args\.)?([A-Za-z_]\w*)(?:=|$)", str(arg)))
    }
    init_args = _plain(model_config.get("init_args")) or {}
    changed = [
        f"{k}={_show(init_args[k])} on the command line, {_show(hparams[k])} in the checkpoint"
        for k in sorted(given)
        if k in init_args
        and k in hparams
        and k not in EVALUATION_MAY_CHANGE
        and _plain(hparams[k]) != _plain(init_args[k])
    ]
    if changed:
        raise CheckpointError(
            f"--ckpt_path {path} was trained with other model settings ({'; '.join(changed)}): its "
            "weights fit only the model it was trained as, so the checkpoint's settings are used; "
            "drop those options, or pass a checkpoint trained with them"
        )


def check_weights(path: str, facts: CheckpointFacts, model: Any, resuming_fit: bool) -> None:
    """The built model must take the checkpoint's weights as they are (every key, every shape) and, for a
    resumed fit, the checkpoint must hold the optimizer's state: one line before Lightning loads it."""
    check_data_sizes(path, facts.hparams, model)
    from lightning_rect.models.classifier import PRETRAINED_LOADED_KEY

    ours = _shapes(model.state_dict())
    problems = [
        f"{k} is {list(theirs)} in the checkpoint, {list(mine)} in the model"
        for k, mine in ours.items()
        if (theirs := facts.shapes.get(k)) is not None and mine is not None and theirs != mine
    ]
    if getattr(model, "strict_loading", True):
        missing = [k for k in ours if k not in facts.shapes and k.rpartition(".")[2] != PRETRAINED_LOADED_KEY]
        extra = [k for k in facts.shapes if k not in ours]
        problems += [f"{_few(missing)} missing" if missing else "", f"{_few(extra)} not in the model" if extra else ""]
    problems = [p for p in problems if p]
    if problems:
        sizes = getattr(model, "hparams", {}).get("hidden_sizes")
        built = f"{type(model).__name__}{f' with hidden_sizes={list(sizes)}' if sizes is not None else ''}"
        raise CheckpointError(
            f"--ckpt_path {path} does not fit the model its settings build ({built}): "
            f"{_few(problems, 3)}; the checkpoint is damaged or was written by other code; pass a "
            "checkpoint written by a fit of this model (model settings such as hidden_sizes given "
            "on the command line must match the checkpoint's)"
        )
    if resuming_fit and not facts.optimizer_state:
        raise CheckpointError(
            f"--ckpt_path {path} holds no optimizer state (written with save_weights_only, or cut "
            "down), so a fit cannot resume from it; evaluate it with `test --ckpt_path`, or start "
            f"a new run from its weights (a StackedDAE's: --model.init_args.pretrained={path})"
        )


def _shapes(state: dict) -> dict[str, tuple[int, ...] | None]:
    """Each key of a state_dict and its tensor's shape (None for other values: a module's extra state)."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else None for k, v in state.items()}


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def check_data_sizes(path: str, hparams: dict, model: Any) -> None:
    """The sizes the CLI links from the data (``in_features``, ``num_classes``) must be the checkpoint's."""
    ours = getattr(model, "hparams", {})
    changed = [
        f"{k}={hparams[k]} -> {ours[k]}"
        for k in ("in_features", "num_classes")
        if k in hparams and k in ours and hparams[k] != ours[k]
    ]
    if changed:
        raise CheckpointError(
            f"--ckpt_path {path} was trained on data of another shape ({'; '.join(changed)}); "
            "use the data set it was trained on"
        )


def changed_sections(path: Path, fit_config: Any) -> list[str]:
    """``optimizer``/``lr_scheduler`` entries that differ from the run folder's first ``config.yaml``."""
    try:
        first = yaml.safe_load((path.parent.parent / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    if path.parent.name != "checkpoints" or not isinstance(first, dict):
        return []
    return [
        f"{key} {_show(first.get(key))} -> {_show(fit_config.get(key))}"
        for key in ("optimizer", "lr_scheduler")
        if _plain(first.get(key)) != _plain(fit_config.get(key))
    ]


def _class_name(class_path: Any) -> str | None:
    return str(class_path).rpartition(".")[2] if class_path else None


def _plain(value: Any) -> Any:
    """Config and checkpoint values in one comparable form (namespaces as dicts, tuples as lists)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _show(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, dict) and "class_path" in value:
        args = ", ".join(f"{k}={v}" for k, v in (value.get("init_args") or {}).items())
        return f"{_class_name(value['class_path'])}({args})"
    return str(value)


# -- what a resumed fit carries over ----------------------------------------------------------------


def checkpoint_log_step(checkpoint: dict) -> int:
    """The logging step a checkpoint was saved at: every row logged up to it belongs to the run."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"])
    except (KeyError, TypeError, ValueError):
        return int(checkpoint.get("global_step", 0))


class RunContinuity(Callback):
    """Keeps a run whole across ``--ckpt_path``: loggers with ``continue_history`` keep the rows logged up
    to the checkpoint's step; a changed ``lr`` is applied to the restored optimizer, printed and logged."""

    def __init__(self) -> None:
        self.resumed_step: int | None = None
        self._resumed_lr: float | None = None

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # the test of the best checkpoint also loads one
            return
        self.resumed_step = int(checkpoint.get("global_step", 0))
        self._resumed_lr = (checkpoint.get("hyper_parameters") or {}).get("lr")
        for logger in trainer.loggers:
            continue_history = getattr(logger, "continue_history", None)  # RunCSVLogger's
            if callable(continue_history):
                continue_history(checkpoint_log_step(checkpoint))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        old, new = self._resumed_lr, getattr(pl_module, "hparams", {}).get("lr")
        if old is None or new is None or math.isclose(float(old), float(new), rel_tol=1e-12):
            return
        apply_learning_rate(trainer, float(old), float(new))
        if trainer.is_global_zero:
            print(
                f"resumed at step {self.resumed_step}: learning rate changed from {old:g} to {new:g}; "
                "the restored optimizer now uses the new value"
            )
        for logger in trainer.loggers:
            logger.log_metrics({"resume/lr_before": float(old), "resume/lr": float(new)}, step=self.resumed_step)


def note_lost_history(logger_config: Any) -> None:
    """Resuming with Lightning's own ``CSVLogger``: say, in one line, that its ``metrics.csv`` starts afresh."""
    for logger in logger_config if isinstance(logger_config, list) else [logger_config]:
        if str(getattr(logger, "class_path", "")) in LIGHTNINGS_CSV_LOGGER:
            print(
                f"note: {logger.class_path} deletes the run's metrics.csv on a resume, so the rows before the "
                "checkpoint are lost; name lightning_rect.app.loggers.CSVLogger in trainer.logger to keep them",
                file=sys.stderr,
            )


def apply_learning_rate(trainer: Trainer, old: float, new: float) -> None:
    """Set the restored optimizers to ``new``; under a scheduler its whole schedule is scaled by new/old."""
    for group in (group for optimizer in trainer.optimizers for group in optimizer.param_groups):
        if "initial_lr" in group:  # a scheduler's: scale it and the current value
            group["initial_lr"] *= new / old
        group["lr"] = group["lr"] * new / old if "initial_lr" in group else new
    for config in trainer.lr_scheduler_configs:
        if hasattr(config.scheduler, "base_lrs"):
            config.scheduler.base_lrs = [lr * new / old for lr in config.scheduler.base_lrs]


def remove_untrained_run(folder: Path) -> None:
    """Remove a run folder this fit created before training anything (never one that holds a
    checkpoint), and its parent (``<save_dir>/<name>``) when that is left empty."""
    if not folder.is_dir() or any(folder.rglob("*.ckpt")):
        return
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # only when empty
