"""Training throughput of lightning_rect against a bare PyTorch loop, side by side in one process.

    python benchmarks/throughput.py                 # the paper's MNIST network, 3-5 minutes on 2 cores
    python benchmarks/throughput.py --repeats 25    # tighter medians

Both train 784-1000-1000-1000-10 rectifier nets with L1 0.001 on the activations and plain SGD,
on MNIST-shaped data held in memory (uint8 pixels scaled per batch, as ``MNISTDataModule`` does):

1. bare: tensors in memory, a random permutation per epoch, slicing, ``loss.backward()``, ``opt.step()``;
2. lightning: ``SparseMLP`` + an in-memory DataModule + ``Trainer`` with what the CLI and the
   default configs use: CSV logger, Lightning's ``TQDMProgressBar`` with a refresh rate, the
   best/last ``ModelCheckpoint``, ``DivergenceGuard`` (``lightning_rect.app.cli.fit_callbacks``),
   and ``SparsityMonitor`` (or not, to price it);
3. the Trainer alone: the same ``SparseMLP`` and data, no logger, callback or checkpoint. Not a
   configuration anyone trains with: it prices Lightning's own per-step machinery, the floor under
   the ratio of 2.

Plain Lightning: automatic optimization, Lightning's default profiler. Each measurement times one
training epoch of ``--steps`` batches from the end of its ``WARMUP``-th batch to the end of its last
(set-up, validation and checkpoint writing are excluded for both: steady-state throughput). The
Lightning run is timed from the model's own ``on_train_batch_end`` hook, which the Trainer calls
anyway, so timing adds no callback.
Each repeat runs the four in a rotating order; this machine's speed drifts by several percent
over tens of seconds, so the figures are medians of the per-repeat ratios, which a drift slower
than one repeat cancels out of. On a GPU both use the GPU.

The monitor's firing-rate histograms are made at validation and test epoch ends only, which the
timed window leaves out like the rest of validation; their cost is timed on its own instead (the
histograms of the 3 x 1000 units from their counts, the ``wandb.Histogram`` objects, rewriting
``firing_rates.json``) and printed as a share of one 50,000-example MNIST epoch at the measured
throughput: what they add to training, once per epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from measure import quartiles

from lightning_rect import SparseMLP
from lightning_rect.app.cli import fit_callbacks
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.data.base import InMemoryDataModule
from lightning_rect.data.batches import Affine
from lightning_rect.encoder import Encoder, l1_penalty

SIZES = [1000, 1000, 1000]
WARMUP = 5  # batches not timed, in both loops


class SyntheticMNIST(InMemoryDataModule):
    """MNIST-shaped uint8 images with random labels, served exactly as MNISTDataModule serves them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.images, self.labels = images, labels
        self.input_size, self.num_classes = 784, 10
        self.transform = Affine(scale=1 / 255)

    def load_splits(self):
        val = (self.images[:1000], self.labels[:1000])
        return {"train": (self.images, self.labels), "val": val, "test": val}


def bare_epoch(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """The loop a user would write by hand; returns samples per second."""
    torch.manual_seed(0)
    encoder = Encoder(784, SIZES).to(device)
    head = torch.nn.Linear(SIZES[-1], 10).to(device)
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    x_all, y_all = images.to(device), labels.to(device)
    order = torch.randperm(len(y_all), device=device)
    start = time.perf_counter()
    for step, i in enumerate(range(0, len(order), batch_size)):
        if step == WARMUP:
            _sync(device)
            start = time.perf_counter()
        idx = order[i : i + batch_size]
        x = x_all[idx].float().flatten(1) / 255
        hidden = encoder(x)
        loss = F.cross_entropy(head(hidden[-1]), y_all[idx]) + 0.001 * l1_penalty(hidden)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return (len(order) - WARMUP * batch_size) / (time.perf_counter() - start)


class TimedSparseMLP(SparseMLP):
    """``SparseMLP`` that notes the time at the end of its ``WARMUP``-th and last training batches."""

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 == WARMUP:
            _sync(self.device)
            self.start = time.perf_counter()
        if batch_idx + 1 == self.trainer.num_training_batches:
            _sync(self.device)
            self.seconds = time.perf_counter() - self.start


def lightning_epoch(
    images, labels, batch_size: int, monitor: bool, accelerator: str, fit_defaults: bool = True
) -> float:
    """``fit_defaults=False``: the Trainer alone, with no logger, callback or checkpoint (Lightning's floor)."""
    torch.manual_seed(0)
    dm = SyntheticMNIST(images, labels, batch_size)
    model = TimedSparseMLP(784, 10, SIZES, l1=0.001, lr=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [SparsityMonitor()] if monitor else []
        if fit_defaults:  # exactly what `python -m lightning_rect fit` adds: best/last checkpoint, guard, bar
            callbacks += fit_callbacks(callbacks, model, {})
        trainer = L.Trainer(
            max_epochs=1,
            accelerator=accelerator,
            devices=1,
            logger=CSVLogger(tmp) if fit_defaults else False,
            callbacks=callbacks,
            default_root_dir=tmp,
            enable_checkpointing=fit_defaults,
            enable_progress_bar=fit_defaults,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1,
        )
        with contextlib.redirect_stdout(sys.stderr):  # the progress bar: stdout keeps the table alone
            trainer.fit(model, datamodule=dm)
    return (len(labels) - WARMUP * batch_size) / model.seconds


def histogram_seconds(repeats: int = 25) -> float:
    """Median seconds of what SparsityMonitor adds at a validation epoch end for the paper's
    network: per layer the histogram from the counts, a ``wandb.Histogram`` (what a W&B logger
    receives) and the rewrite of ``firing_rates.json``."""
    import wandb

    from lightning_rect.callbacks.sparsity import RATES_FILE, firing_rate_histogram, save_firing_rates

    generator = torch.Generator().manual_seed(0)
    rows = 10_000.0
    counts = {
        f"layer_{k}": (torch.randint(0, int(rows) + 1, (size,), generator=generator).double(), rows)
        for k, size in enumerate(SIZES, start=1)
    }
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            histograms = {layer: firing_rate_histogram(nonzero, n) for layer, (nonzero, n) in counts.items()}
            [wandb.Histogram(np_histogram=(list(h.counts), h.edges)) for h in histograms.values()]
            save_firing_rates(Path(tmp) / RATES_FILE, "val", histograms, counts, epoch=0, global_step=0)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200, help="training batches per measured epoch")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args(argv)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, batches/epoch: {args.steps}", file=sys.stderr)
    loops = {
        "bare": lambda x, y, bs: bare_epoch(x, y, bs, device),
        "lightning": lambda x, y, bs: lightning_epoch(x, y, bs, True, accelerator),
        "lightning_no_monitor": lambda x, y, bs: lightning_epoch(x, y, bs, False, accelerator),
        "trainer_alone": lambda x, y, bs: lightning_epoch(x, y, bs, False, accelerator, fit_defaults=False),
    }
    names = list(loops)
    rows = []
    for batch_size in args.batch_sizes:
        generator = torch.Generator().manual_seed(0)
        examples = args.steps * batch_size
        images = torch.randint(0, 256, (examples, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (examples,), generator=generator)
        runs: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotate the order
                runs[name].append(loops[name](images, labels, batch_size))
            print(
                f"batch {batch_size}, repeat {repeat + 1}/{args.repeats}: "
                + ", ".join(f"{name} {runs[name][-1]:.0f}/s" for name in names),
                file=sys.stderr,
            )
        rows.append((batch_size, runs))
    print()
    print(
        "| batch | bare loop (samples/s) | lightning_rect + monitor | lightning_rect, no monitor | ratio vs bare "
        "| monitor cost | Trainer alone (samples/s) | its ratio vs bare |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch_size, runs in rows:
        med = {name: statistics.median(values) for name, values in runs.items()}
        ratios = [a / b for a, b in zip(runs["lightning"], runs["bare"])]
        monitor = statistics.median(a / b for a, b in zip(runs["lightning"], runs["lightning_no_monitor"]))
        floor = [a / b for a, b in zip(runs["trainer_alone"], runs["bare"])]
        line = (
            f"| {batch_size} | {med['bare']:.0f} | {med['lightning']:.0f} | {med['lightning_no_monitor']:.0f} "
            f"| {statistics.median(ratios):.3f} ({quartiles(ratios)}) | {100 * (1 - monitor):.1f}% "
            f"| {med['trainer_alone']:.0f} | {statistics.median(floor):.3f} ({quartiles(floor)}) |"
        )
        print(line)
    print(
        "\n(samples/s: medians over repeats; ratios and monitor cost: medians of the per-repeat ratios,"
        " in brackets the middle half of the per-repeat ratios)"
    )
    seconds = histogram_seconds()
    print(f"\nfiring-rate histograms at each validation epoch end: {1000 * seconds:.2f} ms (3 x 1000 units)")
    for batch_size, runs in rows:
        epoch = 50_000 / statistics.median(runs["lightning"])
        print(f"  batch {batch_size}: {100 * seconds / epoch:.4f}% of one 50,000-example epoch ({epoch:.1f} s)")


if __name__ == "__main__":
    main()
