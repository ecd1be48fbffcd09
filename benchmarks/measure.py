"""What every benchmark here reports with its figures: the spread of repeated measurements, the
machine's load, and the rotating order that cancels a slow drift of the machine's speed."""

from __future__ import annotations

import os
import statistics


def quartiles(values: list[float], digits: int = 3) -> str:
    """The middle half of ``values`` as ``low-high`` (``one repeat`` for a single value)."""
    if len(values) < 2:
        return "one repeat"
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.{digits}f}-{high:.{digits}f}"


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"


def rotated(names: list[str], repeat: int) -> list[str]:
    """``names`` starting at a different one each repeat: a drift of the machine's speed slower than a
    repeat then falls alike on each, and cancels out of per-repeat ratios."""
    k = repeat % len(names)
    return names[k:] + names[:k]
