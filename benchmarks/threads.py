"""One torch thread or two for a ``fit`` of the paper's MNIST network, on a quiet machine and beside
another fit: what decides the CLI's default thread count (docs/guide/speed.md).

    python benchmarks/threads.py                 # batch 10 and 100, quiet and loaded, ~10 minutes on 2 cores
    python benchmarks/threads.py --repeats 3 --conditions quiet

Each measurement is a child process (OpenMP reads its settings at start) that trains the plain
``SparseMLP`` 784-1000-1000-1000-10 through a Trainer, as ``fast_path.py``'s "plain" does, on
MNIST-shaped data in memory, and reports its steady-state steps per second (after ``WARMUP``
batches; set-up excluded). Settings: 1 thread; 2 threads; 2 threads with ``OMP_WAIT_POLICY=passive``
(idle OpenMP threads sleep instead of spinning). Conditions: ``quiet`` (nothing else of ours runs:
the load average is printed, so other users of the machine show) and ``loaded`` (a single-thread fit
of the same network trains beside it the whole time, as a second run of a grid would). Each repeat
runs the settings in a rotating order; the ratios to one thread are medians of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

from measure import machine_load, quartiles, rotated

SETTINGS = {  # name -> (torch threads, extra environment)
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "2 threads, passive wait": (2, {"OMP_WAIT_POLICY": "passive"}),
}


def child(threads: int, batch_size: int, steps: int) -> None:
    import logging
    import warnings

    import torch
    from fast_path import lightning_epoch, make_data

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    images, labels = make_data(steps * batch_size)
    per_second, _, _ = lightning_epoch(images, labels, batch_size, fused=False)
    print(f"steps/s {per_second:.4f}", flush=True)


def competitor() -> None:
    """Single-thread fits of the same network, one after another, until killed."""
    while True:
        child(1, 10, 2000)


def measure(setting: str, batch_size: int, steps: int) -> float:
    threads, extra = SETTINGS[setting]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore", **extra}
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(threads), "--batch", str(batch_size), "--steps", str(steps)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    return float(re.search(r"steps/s ([\d.]+)", out).group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--conditions", nargs="+", choices=["quiet", "loaded"], default=["quiet", "loaded"])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--competitor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.competitor:
        return competitor()
    if args.child:
        return child(args.child, args.batch, args.steps)

    names = list(SETTINGS)
    results = {}
    for condition in args.conditions:
        beside = None
        if condition == "loaded":
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
            beside = subprocess.Popen([sys.executable, __file__, "--competitor"], env=env, stdout=subprocess.DEVNULL)
            time.sleep(10)  # its set-up done: it trains the whole time of the measurements
        try:
            print(f"{condition}: start, {machine_load()}", file=sys.stderr)
            for batch_size in args.batch_sizes:
                steps = 300 if batch_size <= 10 else 100
                rates = {name: [] for name in names}
                for repeat in range(args.repeats):
                    for name in rotated(names, repeat):
                        rates[name].append(measure(name, batch_size, steps))
                    print(
                        f"{condition} batch {batch_size} {repeat + 1}/{args.repeats}: "
                        + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names),
                        file=sys.stderr,
                    )
                results[condition, batch_size] = rates
            print(f"{condition}: end, {machine_load()}", file=sys.stderr)
        finally:
            if beside is not None:
                beside.kill()
                beside.wait()

    print(f"\nSteps per second after warm-up (medians of {args.repeats}); ratios to one thread (medians of")
    print("per-repeat ratios, middle half in brackets)\n")
    print(
        "| condition | batch | " + " | ".join(names) + " | " + " | ".join(f"{n} / 1 thread" for n in names[1:]) + " |"
    )
    print("|---" * (2 + 2 * len(names) - 1) + "|")
    for (condition, batch_size), rates in results.items():
        cells = [f"{statistics.median(rates[n]):.1f}" for n in names]
        ratios = []
        for name in names[1:]:
            per_repeat = [a / b for a, b in zip(rates[name], rates[names[0]])]
            ratios.append(f"{statistics.median(per_repeat):.2f} ({quartiles(per_repeat, digits=2)})")
        print(f"| {condition} | {batch_size} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
