"""``lightning-rect plot RUN_FOLDER [RUN_FOLDER ...] [-o OUT.png]``: (re)draw figures from run folders.

One folder: its summary (``summary.py``), written to ``summary.png`` in that folder unless ``-o``
says where. Several folders: one overlay (``compare.py``), written to ``comparison.png`` in the
current folder unless ``-o`` says where; the legend names each run by what differs in its
``config.yaml``. A folder of versions (``runs/digits``) stands for its newest ``version_N``.
Everything is read from the folders' files, so runs from before this command redraw too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_rect.app.plots.compare import COMPARISON_FILE, save_comparison
from lightning_rect.app.plots.summary import SUMMARY_FILE, save_summary
from lightning_rect.errors import LightningRectError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-rect plot",
        description="Draw the summary figure of a run folder (runs/<name>/version_N), or one figure overlaying "
        "several runs, from the files the run wrote (metrics.csv, results.json, config.yaml, "
        "firing_rates.json). Needs matplotlib: pip install 'lightning-rect[plot]'.",
    )
    p.add_argument("folders", nargs="+", metavar="RUN_FOLDER", help="a run folder (or a folder of version_N folders)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.png",
        help=f"where to write the figure (default: RUN_FOLDER/{SUMMARY_FILE} for one folder, "
        f"./{COMPARISON_FILE} for several)",
    )
    return p


def main(argv: Sequence[str]) -> Path:
    args = parser().parse_args(list(argv))
    try:
        if len(args.folders) == 1:
            path = save_summary(args.folders[0], args.output)
        else:
            path, comparison = save_comparison(args.folders, args.output or COMPARISON_FILE)
            print("runs: " + "; ".join(label.replace("\n", " ") for label in comparison.labels))
    except LightningRectError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")
    return path
