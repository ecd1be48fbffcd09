"""``python -m lightning_rect reproduce <experiment>``: the paper's tables and figures, one command each.

Modules, in the order a reproduction uses them:

- ``budgets``: the data sets' facts and the ``tiny`` / ``small`` / ``paper`` budgets, one table;
- ``plan``: a run's ``Cell`` (the result it competes for), its settings and stable id;
- ``experiments/``: one module per experiment (``table1``, ``l1_sweep``, ``sharpness``,
  ``semi_supervised``) with its plan, its Markdown table, its figure and its W&B sweep files;
- ``runner``: reuses finished runs made from the same inputs (``inputs``: data files, config
  file, version), trains the others (one ``fit`` child process each, or in this process), never
  more at once than the cores allow, with one progress line per validation (``progress``);
- ``report``: ``runs.json``, the Markdown around each experiment's table, the PNG; ``paper``:
  the paper's numbers;
- ``sweeps``: a plan as W&B sweep files (``--sweep``; the paper budget's are configs/sweeps/).
"""

from lightning_rect.reproduce.command import main

__all__ = ["main"]
