"""One run of ``reproduce`` at the paper budget, trained with the in-place SGD step and without it
(``--plain-sgd``), side by side in time: what ``reproduce``'s default of ``fused_sgd`` saves per run.

    python benchmarks/reproduce_cell.py --data-dir ../shared/data      # ~8 minutes on one core

Each measurement is the run's own ``fit`` command, as ``reproduce`` starts it (one thread, the
allocator settings of its child processes), shortened to ``--batches`` training batches of its first
epoch with the whole validation pass, timed as a whole process (interpreter, imports, data, fit).
The two alternate, ``--repeats`` times each; the ratio is the median of the per-pair ratios. A
whole run's time is its epochs times the time of one: multiply by the run's epoch count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from measure import machine_load, quartiles

from lightning_rect.reproduce.command import budget_of
from lightning_rect.reproduce.experiments import EXPERIMENTS, Context
from lightning_rect.reproduce.runner import MALLOC_TUNABLES, Options, Runner

ROOT = Path(__file__).resolve().parents[1]


def fit_command(run_id: str, data_dir: Path, out: Path, fused: bool) -> list[str]:
    specs = EXPERIMENTS["table1"].plan(Context(budget_of("paper", None, None), ROOT / "configs"), ["mnist"])
    [spec] = [s for s in specs if s.id == run_id]
    runner = Runner(Options(out=out, configs_dir=ROOT / "configs", data_dir=data_dir, fused_sgd=fused))
    return runner.command(spec)


def seconds(command: list[str]) -> float:
    env = {"GLIBC_TUNABLES": MALLOC_TUNABLES, **os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding MNIST/raw")
    parser.add_argument("--run", default="mnist-rectifier-nopre-lr0.03-a3726719", help="a Table 1 run id")
    parser.add_argument(
        "--batches", type=int, default=5000, help="training batches of each measurement (5000: an epoch)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"start: {machine_load()}")
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for fused in (repeat % 2 == 0, repeat % 2 == 1):  # alternate which goes first
                out = Path(tmp) / f"{repeat}-{fused}"
                command = fit_command(args.run, args.data_dir.resolve(), out, fused)
                command += [f"--trainer.limit_train_batches={args.batches}", "--trainer.max_epochs=1"]
                times[fused].append(seconds(command))
            print(f"repeat {repeat + 1}: in-place {times[True][-1]:.1f} s, plain {times[False][-1]:.1f} s")
    ratios = [plain / fused for plain, fused in zip(times[False], times[True])]
    print(f"end: {machine_load()}")
    print(
        f"\n{args.run}, {args.batches} batches + validation, whole process, one thread (medians of {args.repeats}):\n"
        f"plain {statistics.median(times[False]):.1f} s, in-place {statistics.median(times[True]):.1f} s; "
        f"plain / in-place {statistics.median(ratios):.2f} ({quartiles(ratios, digits=2)})"
    )


if __name__ == "__main__":
    main()
