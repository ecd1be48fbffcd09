"""Which runs ``reproduce`` trains with the in-place SGD step (``fused_sgd``, lightning_rect/fused_sgd.py).

Every run whose update is plain SGD on one process: the model takes ``fused_sgd``, its optimizer is
the model's own SGD without momentum, and the config sets no gradient clipping or accumulation, no
reduced precision and no second device. Where it holds, the fast path computes the same step (the
weights agree to float rounding: benchmarks/README.md, "Agreement with plain SGD"), so it is an
execution setting like the thread count: it is not part of a run's id or settings, and runs trained
either way are reused by each other. A run's probe (``probe.py``) trains with it, so a fault in the
fast path shows as a changed probe; in float64 the two paths agree far inside the probe's tolerance.

``reproduce --plain-sgd`` trains every run without it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from lightning_rect.fused_sgd import FULL_PRECISIONS

#: The dotted setting ``fit`` gets for a run on the fast path.
FUSED_SGD = "model.init_args.fused_sgd"
#: The precisions ``fused_sgd`` accepts, with the short forms a config may give them in (None: the default).
_PLAIN_PRECISIONS = (None, *FULL_PRECISIONS, "32", 32, "64", 64)


def fused_sgd_holds(config: dict[str, Any]) -> bool:
    """Whether the effective ``config`` (the config file with the run's settings) trains with plain SGD
    on one process in a model that offers ``fused_sgd``, and does not set ``fused_sgd`` itself."""
    model = config.get("model") or {}
    args = model.get("init_args") or {}
    trainer = config.get("trainer") or {}
    if "fused_sgd" in args or not _takes_fused_sgd(model.get("class_path")):
        return False
    return (
        args.get("optimizer", "sgd") == "sgd"
        and not args.get("momentum")
        and not trainer.get("gradient_clip_val")
        and trainer.get("accumulate_grad_batches") in (None, 1)
        and trainer.get("precision") in _PLAIN_PRECISIONS
        and trainer.get("devices") in (None, 1, "1")  # "auto" is every GPU of a machine that has several
        and trainer.get("num_nodes") in (None, 1)
        and trainer.get("strategy") in (None, "auto")
    )


def _takes_fused_sgd(class_path: Any) -> bool:
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return "fused_sgd" in inspect.signature(cls).parameters
