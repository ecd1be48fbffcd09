"""``python -m lightning_rect reproduce <experiment>``: the paper's tables and figures, one command each.

Modules, in the order a reproduction uses them:

- ``catalog``: the data sets' facts, one entry each; ``budgets``: the ``tiny`` / ``small`` /
  ``grid`` / ``paper`` budgets, one table;
- ``plan``: a run's ``Cell`` (the result it competes for), its settings and stable id;
- ``experiments/``: one module per experiment (``table1``, ``l1_sweep``, ``sharpness``,
  ``semi_supervised``, ``protocol``, ``pretraining``) with its plan, its Markdown table, its figure
  and its W&B sweep files;
- ``runner``: reuses finished runs that the code would still train the same way (``inputs``: data
  files, config, settings and a short seeded ``probe`` of the run's config), refuses runs whose files
  are damaged (``run_files``), trains the others (one ``fit`` child process each, or in this
  process), never more at once than the cores allow, with one progress line per validation
  (``progress``);
- ``report``: ``runs.json``, the Markdown around each experiment's table (and its ``notes.md``),
  the PNG; ``paper``: the paper's numbers;
- ``sweeps``: a plan as W&B sweep files (``--sweep``; the paper budget's are configs/sweeps/).
"""

from lightning_rect.reproduce.command import main

__all__ = ["main"]
