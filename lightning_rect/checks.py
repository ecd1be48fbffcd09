"""Range checks for configuration values; each failure names the field and what is allowed."""

from __future__ import annotations

import math
import os
from itertools import pairwise
from typing import TypeGuard

from lightning_rect.errors import ConfigError

#: Bytes a parameter takes while training in float32: the weight, its gradient, the optimizer's state.
TRAINING_BYTES_PER_PARAMETER = 3 * 4


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float, not a bool: ``True`` is an int to Python, never a count or a rate in a config."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: object) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def check_non_negative(name: str, value: object) -> None:
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: object) -> None:
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's available memory, or the address-space limit
    (``ulimit -v``) if lower; None when neither is known."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            found.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(found) if found else None


def check_model_fits_in_memory(
    hidden_sizes: list[int], in_features: int, num_classes: int = 1, what: str = "model.init_args.hidden_sizes"
) -> None:
    """Refuse, before any weight is allocated, a net of fully connected layers ``in_features -> hidden_sizes
    -> num_classes`` whose training needs more memory than is available (a typo such as 2000000000 units)."""
    sizes = [int(in_features), *map(int, hidden_sizes), max(int(num_classes), 1)]
    parameters = sum(a * b + b for a, b in pairwise(sizes))
    needed, available = parameters * TRAINING_BYTES_PER_PARAMETER, available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"{what}={list(hidden_sizes)}: a net of these sizes on {in_features} inputs has "
            f"{parameters:,} parameters and needs about {needed / 2**30:,.1f} GB to train, more than the "
            f"{available / 2**30:,.1f} GB of memory available; use smaller hidden_sizes (the paper's "
            "nets have 1000 units a layer)"
        )
