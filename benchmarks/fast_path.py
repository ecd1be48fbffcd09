"""``fused_sgd`` (SGD in place inside backward) against the plain Lightning fit and a bare PyTorch loop.

    python benchmarks/fast_path.py --bare-fused     # batch 10 and 100, 10-15 minutes on 2 loaded cores
    python benchmarks/fast_path.py --repeats 9 --process-repeats 5

All train 784-1000-1000-1000-10 rectifier nets with L1 0.001 on the activations and plain SGD (lr 0.01)
on MNIST-shaped uint8 data held in memory, in a single thread (``torch.set_num_threads(1)``):

1. bare: ``nn.Linear`` + ReLU modules, a permutation per epoch, slicing, ``loss.backward()``,
   ``torch.optim.SGD.step()``: the loop a user writes by hand;
2. plain: ``SparseMLP`` + an in-memory DataModule (the package's batch path: ``Affine`` scaling of the
   uint8 pixels) + ``Trainer`` with no logger, callback or checkpoint;
3. fast: the same with ``SparseMLP(fused_sgd=True)``;
4. with ``--bare-fused``: the bare loop with the fused layer op of ``lightning_rect.fused_sgd`` (no
   Lightning): the ceiling of the fast path, to price Lightning's own per-step work on it.

Two measurements, both interleaved (each repeat runs the variants in a rotating order, so a drift of
the machine's speed slower than a repeat cancels out of the per-repeat ratios; medians are reported):

- steady state: steps per second of one epoch of ``--steps`` batches from the end of batch ``WARMUP``
  to the end of the last (set-up excluded), in this process. The Lightning runs are timed from the
  model's own ``on_train_batch_end``, which the Trainer calls anyway;
- whole process: wall time of a child process that imports what it needs, makes the data, builds
  the model (and the Trainer) and trains ``--process-steps`` batches, as a short fit would.

On a loaded machine a process holds a core only part of the time, so each figure is also given per
CPU second (the process's CPU time instead of wall time; the child's user + system time for whole
processes): ratios of those are what the code costs, whatever the scheduler did. The minor page
faults per steady-state step are counted too: with glibc's default allocator a loop that frees its
4 MB gradients at the top of the heap faults them in again every step (benchmarks/README.md; run it
with and without ``GLIBC_TUNABLES``). The machine's load (``os.getloadavg``) is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from measure import machine_load, quartiles, rotated

WARMUP = 10  # batches not timed, in every loop
SIZES = [784, 1000, 1000, 1000, 10]
L1, LR = 0.001, 0.01


def make_data(examples: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (examples, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (examples,), generator=generator)
    return images, labels


# -- bare loops --------------------------------------------------------------------------------------


def bare_epoch(images, labels, batch_size: int, fused: bool = False) -> tuple[float, float, float]:
    """One epoch by hand; returns steps after warm-up per wall second and per CPU second, and the
    minor page faults per step."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(SIZES, SIZES[1:]))
    optimizer = torch.optim.SGD(layers.parameters(), lr=LR)
    if fused:
        from lightning_rect.fused_sgd import _LinearWithSGD

        class ConstantLR:  # what InPlaceSGD gives the op: the learning rate of a parameter
            def lr(self, param):
                return optimizer.param_groups[0]["lr"]

        sgd = ConstantLR()
    order = torch.randperm(len(labels))
    steps = len(order) // batch_size
    start = cpu = faults = 0.0
    for step in range(steps):
        if step == WARMUP:
            start, cpu, faults = time.perf_counter(), time.process_time(), _minor_faults()
        idx = order[step * batch_size : (step + 1) * batch_size]
        h = images[idx].float().flatten(1) / 255
        hidden = []
        for k, layer in enumerate(layers):
            h = _LinearWithSGD.apply(h, layer.weight, layer.bias, sgd) if fused else layer(h)
            if k < len(layers) - 1:
                h = torch.relu(h)
                hidden.append(h)
        loss = F.cross_entropy(h, labels[idx]) + L1 * sum(t.abs().sum() for t in hidden) / (batch_size * len(hidden))
        if not fused:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not fused:
            optimizer.step()
    wall, cpu, faults = time.perf_counter() - start, time.process_time() - cpu, _minor_faults() - faults
    return (steps - WARMUP) / wall, (steps - WARMUP) / cpu, faults / (steps - WARMUP)


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# -- Lightning -----------------------------------------------------------------------------------------


def lightning_epoch(images, labels, batch_size: int, fused: bool) -> tuple[float, float, float]:
    """One epoch of ``SparseMLP`` through a Trainer; returns what ``bare_epoch`` returns."""
    import lightning as L

    model = _timed_model(fused)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=_datamodule(images, labels, batch_size))
    steps = trainer.num_training_batches - WARMUP
    return steps / model.seconds, steps / model.cpu_seconds, model.faults / steps


def _timed_model(fused: bool):
    import torch

    from lightning_rect import SparseMLP

    class TimedSparseMLP(SparseMLP):
        """Notes the time at the end of batch ``WARMUP`` and of the last batch."""

        def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
            if batch_idx + 1 == WARMUP:
                self.start, self.cpu_start, self.faults = time.perf_counter(), time.process_time(), _minor_faults()
            if batch_idx + 1 == self.trainer.num_training_batches:
                self.seconds = time.perf_counter() - self.start
                self.cpu_seconds = time.process_time() - self.cpu_start
                self.faults = _minor_faults() - self.faults

    torch.manual_seed(0)
    return TimedSparseMLP(SIZES[0], SIZES[-1], SIZES[1:-1], l1=L1, lr=LR, fused_sgd=fused)


def _datamodule(images, labels, batch_size: int):
    from lightning_rect.data.base import InMemoryDataModule
    from lightning_rect.data.batches import Affine

    class SyntheticMNIST(InMemoryDataModule):
        """MNIST-shaped uint8 images served as MNISTDataModule serves them (scaled per batch)."""

        def __init__(self) -> None:
            super().__init__(batch_size=batch_size)
            self.input_size, self.num_classes = SIZES[0], SIZES[-1]
            self.transform = Affine(scale=1 / 255)

        def load_splits(self):
            return {
                "train": (images, labels),
                "val": (images[:100], labels[:100]),
                "test": (images[:100], labels[:100]),
            }

    return SyntheticMNIST()


VARIANTS = {
    "bare": lambda x, y, bs: bare_epoch(x, y, bs),
    "plain": lambda x, y, bs: lightning_epoch(x, y, bs, fused=False),
    "fast": lambda x, y, bs: lightning_epoch(x, y, bs, fused=True),
    "bare_fused": lambda x, y, bs: bare_epoch(x, y, bs, fused=True),
}


def child(name: str, batch_size: int, steps: int) -> None:
    """A whole short run in this (child) process: imports, data, model, Trainer, ``steps`` batches."""
    import torch

    torch.set_num_threads(1)
    images, labels = make_data(steps * batch_size)
    if name.startswith("bare"):
        bare_epoch(images, labels, batch_size, fused=name == "bare_fused")
        return
    import warnings

    import lightning as L

    warnings.filterwarnings("ignore")
    model = _timed_model(name == "fast")
    L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    ).fit(model, datamodule=_datamodule(images, labels, batch_size))


def process_seconds(name: str, batch_size: int, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a whole child process."""
    import resource

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", name, "--batch-sizes", str(batch_size), "--process-steps", str(steps)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="steady-state repeats per batch size")
    parser.add_argument("--process-repeats", type=int, default=4, help="whole-process repeats per batch size")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="batches per steady-state epoch (default: 250 at batch 10, 80 at batch 100)",
    )
    parser.add_argument(
        "--process-steps",
        type=int,
        default=None,
        help="batches of each whole-process run (default: 500 at batch 10, 100 at batch 100)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--bare-fused", action="store_true", help="also time the bare loop with the fused op")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.batch_sizes[0], args.process_steps)
        return

    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available: ..." at every fit
    names = ["bare", "plain", "fast"] + (["bare_fused"] if args.bare_fused else [])
    print(
        f"start: {machine_load()}; torch threads {torch.get_num_threads()}; GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '(not set)')}",
        file=sys.stderr,
    )
    steady, whole, loads = {}, {}, []
    for batch_size in args.batch_sizes:
        steps = args.steps or (250 if batch_size <= 10 else 80)
        images, labels = make_data(steps * batch_size)
        runs = {name: ([], [], []) for name in names}  # (per wall second, per CPU second, faults per step)
        for repeat in range(args.repeats):
            for name in rotated(names, repeat):
                for values, value in zip(runs[name], VARIANTS[name](images, labels, batch_size)):
                    values.append(value)
            loads.append(os.getloadavg()[0])
            print(
                f"batch {batch_size} steady {repeat + 1}/{args.repeats}: "
                + ", ".join(
                    f"{n} {runs[n][0][-1]:.1f} steps/s ({runs[n][1][-1]:.1f}/cpu s, {runs[n][2][-1]:.0f} faults)"
                    for n in names
                ),
                file=sys.stderr,
            )
        steady[batch_size] = runs
        process_steps = args.process_steps or (500 if batch_size <= 10 else 100)
        seconds = {name: ([], []) for name in names}  # (wall, CPU)
        for repeat in range(args.process_repeats):
            for name in rotated(names, repeat):
                for values, value in zip(seconds[name], process_seconds(name, batch_size, process_steps)):
                    values.append(value)
            loads.append(os.getloadavg()[0])
            print(
                f"batch {batch_size} process {repeat + 1}/{args.process_repeats}: "
                + ", ".join(f"{n} {seconds[n][0][-1]:.2f} s ({seconds[n][1][-1]:.2f} cpu s)" for n in names),
                file=sys.stderr,
            )
        whole[batch_size] = (seconds, process_steps)

    print(
        f"\nend: {machine_load()}; 1-minute load average over the run: median {statistics.median(loads):.1f}, "
        f"range {min(loads):.1f}-{max(loads):.1f}; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(not set)')}\n"
    )
    others = [n for n in names if n != "bare"]
    ratio_heads = " | ".join(f"{n} / bare" for n in others)
    print(
        "Steady state: steps per second after warm-up (medians); ratios to the bare loop (medians of the per-repeat "
        "ratios, middle half in brackets), per wall second and per CPU second\n"
    )
    print("| batch | per | " + " | ".join(names) + " | " + ratio_heads + " |")
    print("|---" * (2 + len(names) + len(others)) + "|")
    for batch_size, runs in steady.items():
        for k, per in enumerate(("wall s", "CPU s")):
            cells = [f"{statistics.median(runs[n][k]):.1f}" for n in names]
            print(
                f"| {batch_size} | {per} | "
                + " | ".join(cells + [_ratio(runs[n][k], runs["bare"][k]) for n in others])
                + " |"
            )
        faults = [f"{statistics.median(runs[n][2]):.0f}" for n in names]
        print(f"| {batch_size} | minor page faults per step | " + " | ".join(faults + [""] * len(others)) + " |")
    print(
        "\nWhole process: seconds of a child process (interpreter, imports, data, set-up and the fit of the given "
        "batches; medians); speed ratios to the bare loop (bare seconds / variant seconds, medians of per-repeat "
        "ratios)\n"
    )
    print("| batch | batches | seconds | " + " | ".join(names) + " | " + ratio_heads + " |")
    print("|---" * (3 + len(names) + len(others)) + "|")
    for batch_size, (seconds, process_steps) in whole.items():
        for k, per in enumerate(("wall", "CPU")):
            cells = [f"{statistics.median(seconds[n][k]):.2f}" for n in names]
            print(
                f"| {batch_size} | {process_steps} | {per} | "
                + " | ".join(cells + [_ratio(seconds["bare"][k], seconds[n][k]) for n in others])
                + " |"
            )


def _ratio(numerators: list[float], denominators: list[float]) -> str:
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return f"{statistics.median(ratios):.2f} ({quartiles(ratios, digits=2)})"


if __name__ == "__main__":
    main()
