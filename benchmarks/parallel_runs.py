"""How to spend the cores on a long grid: one run with all threads, or one single-thread run per core;
and glibc's allocator settings for the runs' processes.

    python benchmarks/parallel_runs.py              # about 4 minutes on 2 cores, nothing else running
    python benchmarks/parallel_runs.py --steps 4000 --rounds 3

Each run is a child process training the paper's MNIST network (784-1000-1000-1000-10 rectifier,
L1 0.001, SGD, batch 10) on MNIST-shaped data in memory through a ``Trainer`` with what ``fit``
adds (``benchmarks/throughput.py``'s ``lightning_epoch``), for ``--steps`` batches. Measured side
by side, in rotating order within each round:

1. one run with as many threads as cores (what ``reproduce --parallel 1`` gives);
2. one single-thread run per core at once (``reproduce --parallel <cores> --threads 1``);
3. the same as 2 with ``GLIBC_TUNABLES`` raising malloc's trim and mmap thresholds, so the large
   tensors freed every step stay in the heap instead of being unmapped and faulted in again.

For each: the runs' combined throughput (batches per second summed over the runs at once) and the
minor page faults per 1,000 batches, both over the same timed window of each run (after warm-up).
The ratios to setting 1 are what to read; the absolute figures drift with the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: What ``reproduce`` gives its children (``lightning_rect.reproduce.runner.MALLOC_TUNABLES``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_rect.reproduce.runner import MALLOC_TUNABLES  # noqa: E402

CHILD = """
import resource, sys, torch
sys.path.insert(0, {bench!r})
import throughput
steps, faults = {steps}, []
timed_hook = throughput.TimedSparseMLP.on_train_batch_end

def counting_hook(self, outputs, batch, batch_idx):  # minor faults over the same window as the time
    if batch_idx + 1 in (throughput.WARMUP, self.trainer.num_training_batches):
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    timed_hook(self, outputs, batch, batch_idx)

throughput.TimedSparseMLP.on_train_batch_end = counting_hook
torch.manual_seed(0)
images = torch.randint(0, 256, (steps * 10, 28, 28), dtype=torch.uint8)
labels = torch.randint(0, 10, (steps * 10,))
rate = throughput.lightning_epoch(images, labels, 10, monitor=True, accelerator="cpu")
print(rate / 10, (faults[1] - faults[0]) / (steps - throughput.WARMUP) * 1000)
"""


def start(steps: int, threads: int, tunables: str | None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    code = CHILD.format(bench=str(Path(__file__).resolve().parent), steps=steps)
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )


def run_together(count: int, steps: int, threads: int, tunables: str | None) -> tuple[float, float]:
    """(batches/s summed over ``count`` runs at once, minor faults per 1,000 batches per run)."""
    procs = [start(steps, threads, tunables) for _ in range(count)]
    rates, faults = [], []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a benchmark run failed (exit {proc.returncode}); run it by hand to see why")
        rate, fault = (float(v) for v in out.strip().splitlines()[-1].split())
        rates.append(rate)
        faults.append(fault)
    return sum(rates), statistics.mean(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="batches per run (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three settings (default 2)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = {
        f"1 run x {cores} threads": (1, cores, None),
        f"{cores} runs x 1 thread": (cores, 1, None),
        f"{cores} runs x 1 thread + malloc tunables": (cores, 1, MALLOC_TUNABLES),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    names = list(settings)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # rotate the order
            started = time.perf_counter()
            results[name].append(run_together(*settings[name][:1], args.steps, *settings[name][1:]))
            print(
                f"round {round_ + 1}: {name}: {results[name][-1][0]:.1f} batches/s, "
                f"{results[name][-1][1]:,.0f} minor faults per 1,000 batches ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
    reference = statistics.median(rate for rate, _ in results[names[0]])
    print(
        f"\n{cores} cores, {args.steps} batches per run, {args.rounds} rounds (medians); "
        f"MALLOC_TUNABLES = {MALLOC_TUNABLES}"
    )
    print("| setting | batches/s, all runs together | vs one run with all threads | minor faults per 1,000 batches |")
    print("|---|---|---|---|")
    for name in names:
        rate = statistics.median(r for r, _ in results[name])
        faults = statistics.median(f for _, f in results[name])
        print(f"| {name} | {rate:.1f} | {rate / reference:.2f}x | {faults:,.0f} |")


if __name__ == "__main__":
    main()
