"""Run the compatibility matrix's cells of one launch group in this process, from the installed package,
and write their outcomes as JSON.

    PYTHONPATH=<wheel's --target dir> COMPAT_WORKDIR=<folder> COMPAT_SHARED=<folder> \\
        python tests/compat/run_cells.py --group single|spawn --out results.json [--only ROW/COLUMN ...]

``single``: every cell of the rows that run in one process, one after the other, in this process.
``spawn``: the ``ddp_spawn`` row (each Trainer call spawns its 2 processes from here). ``ddp_cells.py``
runs the ``ddp`` row. Each cell runs in a folder of its own under ``COMPAT_WORKDIR``; ``COMPAT_SHARED``
holds what cells share (a DAE checkpoint, the CLI's base run). Outcomes: ``works``, ``refused: <the one
line>``, ``needs <package>`` (its optional package is not installed), or ``failed: <error>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

#: The summary figure of every CLI fit (1-3 s each with matplotlib) is tests/test_plots.py's business.
SKIP_FIGURES = True


def prepare() -> None:
    """This process as the cells need it: one torch thread, no summary figures, no stray arguments."""
    import torch

    torch.set_num_threads(1)
    sys.argv = sys.argv[:1]  # LightningCLI(args=...) warns about arguments beside its own
    if SKIP_FIGURES:
        from lightning_rect.app.plots import summary

        summary.write_summary_figure = lambda *args, **kwargs: None


def run_cell(cell, checks, workdir: Path) -> dict:
    """One cell in a folder of its own: ``{"outcome": ..., "seconds": ..., "detail": ...}``."""
    from lightning_rect.errors import LightningRectError

    if cell.row.needs and importlib.util.find_spec(cell.row.needs) is None:
        return {"outcome": f"needs {cell.row.needs}", "seconds": 0.0}
    check = checks.CHECKS.get(cell.check)
    if check is None:
        return {"outcome": f"failed: no check {cell.check} in cells.py", "seconds": 0.0}
    folder = workdir / cell.id.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    here, start = os.getcwd(), time.perf_counter()
    detail: object = None
    try:
        os.chdir(folder)
        detail = check()
        outcome = "works"
    except (checks.Refusal, LightningRectError) as refusal:
        message = str(refusal).strip()
        outcome = f"refused: {message}" if "\n" not in message else f"failed: a refusal of several lines: {message}"
        detail = traceback.format_exc(limit=-4)
    except (Exception, SystemExit) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        outcome = f"failed: {type(err).__name__}: {first}"
        detail = traceback.format_exc(limit=-6)
    finally:
        os.chdir(here)
    seconds = round(time.perf_counter() - start, 2)
    print(f"[compat] {cell.id}: {outcome[:200]} ({seconds} s)", flush=True)
    return {"outcome": outcome, "seconds": seconds, "detail": detail if isinstance(detail, (dict, str)) else None}


def write(out: Path, results: dict) -> None:
    import lightning_rect

    out.write_text(json.dumps({"lightning_rect": lightning_rect.__file__, "cells": results}, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", choices=["single", "spawn"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=None, help="cell ids (row/column) to run")
    args = parser.parse_args()
    import matrix

    workdir = Path(os.environ["COMPAT_WORKDIR"]).resolve()
    prepare()
    import cells as checks

    selected = matrix.cells_of(args.group)
    if args.only:
        selected = [cell for cell in selected if cell.id in args.only]
    results = {}
    for cell in selected:
        results[cell.id] = run_cell(cell, checks, workdir)
        write(args.out, results)  # as it goes: a run cut short still says how far it got


if __name__ == "__main__":  # and only then: ddp_spawn's processes import this file again
    main()
