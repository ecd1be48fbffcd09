"""``python -m lightning_rect reproduce <experiment>``: the paper's tables and figures, one command each.

Modules, in the order a reproduction uses them:

- ``budgets``: the data sets' facts and the ``tiny`` / ``small`` / ``paper`` budgets, one table;
- ``experiments``: each experiment as a static list of runs with stable ids (``table1``,
  ``l1_sweep``, ``sharpness``, ``semi_supervised``);
- ``runner``: reuses finished runs, trains the others (one ``fit`` child process each, or in this
  process), never more at once than the cores allow, with one progress line per validation;
- ``progress``: the ``EpochLine`` callback the runs print those lines with;
- ``report``: ``runs.json``, the Markdown table beside the paper's numbers (``paper``), the PNG.
"""

from lightning_rect.reproduce.command import main

__all__ = ["main"]
