"""``fit --ckpt_path last``: which run folder a resume continues, found before anything is built.

A run lives in ``<save_dir>/<name>/version_<N>/`` (the config's first logger with a ``save_dir``).
Only an unfinished run is resumed: one with a ``checkpoints/last.ckpt`` and no ``results.json``.
The logger is then configured with that run's version, so the resumed fit logs into the same
folder, through the logger's public ``version`` argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_rect.errors import CheckpointError
from lightning_rect.results import RESULTS_FILE


def run_root(logger_config: Any) -> tuple[Any, Path] | None:
    """(init_args namespace, ``save_dir/name``) of the first configured logger that has a ``save_dir``."""
    loggers = logger_config if isinstance(logger_config, list) else [logger_config]
    for logger in loggers:
        init_args = getattr(logger, "init_args", None) if not isinstance(logger, dict) else logger.get("init_args")
        if init_args is None:
            continue
        save_dir = init_args.get("save_dir")
        if save_dir:
            return init_args, Path(save_dir) / str(init_args.get("name") or "lightning_logs")
    return None


def unfinished_run(root: Path) -> Path:
    """The newest ``last.ckpt`` under ``root/version_*`` whose run has no ``results.json``."""
    found = sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    unfinished = [p for p in found if not (p.parent.parent / RESULTS_FILE).exists()]
    if unfinished:
        return unfinished[-1]
    if found:
        raise CheckpointError(
            f"--ckpt_path last: every run under {root} has finished ({found[-1].parent.parent / RESULTS_FILE} exists); "
            "nothing to resume and nothing was changed; run without --ckpt_path to start a new run"
        )
    raise CheckpointError(
        f"--ckpt_path last: no last.ckpt under {root}/version_*/checkpoints; nothing to resume, "
        "run without --ckpt_path to start afresh"
    )


def resolve_last(logger_config: Any) -> str:
    """Path of the checkpoint to resume; sets the configured logger's ``version`` to that run's."""
    found = run_root(logger_config)
    if found is None:
        raise CheckpointError(
            "--ckpt_path last needs a logger with a save_dir in the config (e.g. trainer.logger: CSVLogger with "
            "save_dir and name, as in configs/*.yaml) to know where the runs are; or pass the .ckpt path itself"
        )
    init_args, root = found
    last = unfinished_run(root)
    version = last.parent.parent.name.removeprefix("version_")
    init_args["version"] = int(version) if version.isdigit() else last.parent.parent.name
    print(f"resuming from {last}")
    return str(last)
