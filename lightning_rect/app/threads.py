"""The command's CPU threads: ``--threads N`` and how idle OpenMP threads wait.

The library sets nothing process-wide; these are the command's (``python -m lightning_rect fit ...``)
defaults. Measured with ``benchmarks/threads.py`` on 2 cores (docs/guide/speed.md, "Threads"): two
threads train the paper's MNIST network 1.6x faster than one on a quiet machine, but beside another
fit they collapse to 0.12-0.21x of one thread, because OpenMP's idle threads spin while the other
process holds the core they wait for. With ``OMP_WAIT_POLICY=passive`` (idle threads sleep) two
threads run 1.25x one thread alone and 0.7x beside another fit: the least lost in either case. So the
command keeps torch's default thread count (the cores) with the passive policy, unless the
environment sets ``OMP_WAIT_POLICY``; ``--threads N`` (or ``OMP_NUM_THREADS``) picks the count.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence

from lightning_rect.app.command_line import take_option
from lightning_rect.errors import ConfigError

#: What idle OpenMP threads do by default in the command: sleep, not spin (see above).
WAIT_POLICY = "passive"
HELP = (
    "`--threads N` (command line only) sets torch's CPU threads (default: one per core, idle ones sleeping: "
    "OMP_WAIT_POLICY=passive unless the environment sets it; one thread is fastest beside other work)."
)


def set_wait_policy(environ: MutableMapping[str, str] = os.environ) -> None:
    """``OMP_WAIT_POLICY=passive`` unless set: OpenMP reads it once, when torch loads it, so this must
    run before torch is imported (``python -m lightning_rect`` does it first)."""
    environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def take_threads_option(args: Sequence[str]) -> tuple[list[str], int | None]:
    """``args`` without ``--threads N`` / ``--threads=N``, and N (None when not given; the last one counts)."""
    rest, values = take_option(args, "--threads")
    threads = None
    for value in values:
        if value is None or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--threads {value or '(nothing)'}: give a positive number of threads, e.g. 1")
        threads = int(value)
    return rest, threads


def apply_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process, when ``--threads`` gave a number."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
