"""Callbacks for any Lightning project: one concept per module, re-exported here.

- ``SparsityMonitor`` (``sparsity.py``): exact sparsity and dead units of hidden layers (its
  firing-rate histograms and ``firing_rates.json``: ``firing_rates.py``);
- ``DivergenceGuard`` (``divergence.py``): stops a run whose loss became NaN or infinite;
"""

from lightning_rect.callbacks.divergence import DivergenceGuard
from lightning_rect.callbacks.sparsity import SparsityMonitor

__all__ = ["DivergenceGuard", "SparsityMonitor"]
