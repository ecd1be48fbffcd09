"""Figures of runs, drawn from the files a run folder holds (matplotlib optional).

- ``run_folder.py``: reading ``metrics.csv``, ``results.json``, ``config.yaml`` and
  ``firing_rates.json`` of a run folder;
- ``summary.py``: ``summary.png`` of one run (1200 x 800 pixels), which every ``fit`` writes
  beside ``results.json`` (``write_summary_figure``);
- ``compare.py``: one figure overlaying several runs, named by what differs in their configs;
- ``command.py``: ``python -m lightning_rect plot RUN_FOLDER [...] [-o OUT.png]``.
"""

from lightning_rect.app.plots.compare import Comparison, draw_comparison, run_labels, save_comparison
from lightning_rect.app.plots.run_folder import Run, RunFolderError, load_run
from lightning_rect.app.plots.summary import DPI, FIGSIZE, draw_summary, save_summary, write_summary_figure

__all__ = [
    "DPI",
    "FIGSIZE",
    "Comparison",
    "Run",
    "RunFolderError",
    "draw_comparison",
    "draw_summary",
    "load_run",
    "run_labels",
    "save_comparison",
    "save_summary",
    "write_summary_figure",
]
