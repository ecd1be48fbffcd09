"""Training throughput of lightning_rect against a bare PyTorch loop, side by side in one process.

    python benchmarks/throughput.py                 # the paper's MNIST network, ~3 minutes on 2 cores
    python benchmarks/throughput.py --repeats 5     # steadier medians

Both train 784-1000-1000-1000-10 rectifier nets with L1 0.001 on the activations and plain SGD,
on MNIST-shaped data held in memory (uint8 pixels scaled per batch, as ``MNISTDataModule`` does):

1. bare: tensors in memory, a random permutation per epoch, slicing, ``loss.backward()``, ``opt.step()``;
2. lightning: ``SparseMLP`` + an in-memory DataModule + ``Trainer`` with what the CLI and the
   default configs use: CSV logger, progress bar, the best/last ``ModelCheckpoint``,
   ``DivergenceGuard``, and ``SparsityMonitor`` (or not, to price it).

Each measurement times one training epoch from the end of its ``WARMUP``-th batch to the end of
its last (set-up, first-batch allocations, validation and checkpoint writing are excluded for both,
so the figures are steady-state throughput). Runs alternate bare / lightning ``--repeats`` times and
the medians are compared. On a GPU both use the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from lightning_rect import SparseMLP
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.cli import add_fit_callbacks, selection_checkpoint
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


class EpochTimer(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == WARMUP:
            _sync(pl_module.device)
            self.start = time.perf_counter()
        if batch_idx + 1 == trainer.num_training_batches:
            _sync(pl_module.device)
            self.seconds = time.perf_counter() - self.start


def lightning_epoch(images, labels, batch_size: int, monitor: bool, accelerator: str) -> float:
    torch.manual_seed(0)
    dm = SyntheticMNIST(images, labels, batch_size)
    model = SparseMLP(784, 10, SIZES, l1=0.001, lr=0.01)
    timer = EpochTimer()
    callbacks = [timer, SparsityMonitor()] if monitor else [timer]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=CSVLogger(tmp),
                            callbacks=callbacks, default_root_dir=tmp, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=1)
        # exactly what `python -m lightning_rect fit` adds: best/last checkpoint, guard, progress bar
        selection_checkpoint(trainer, model)
        add_fit_callbacks(trainer)
        trainer.fit(model, datamodule=dm)
    return (len(labels) - WARMUP * batch_size) / timer.seconds


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=10_000, help="training examples per measured epoch")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args(argv)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.examples, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (args.examples,), generator=generator)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, examples/epoch: {args.examples}",
          file=sys.stderr)
    rows = []
    for batch_size in args.batch_sizes:
        runs: dict[str, list[float]] = {"bare": [], "lightning": [], "lightning_no_monitor": []}
        for _ in range(args.repeats):
            runs["bare"].append(bare_epoch(images, labels, batch_size, device))
            runs["lightning"].append(lightning_epoch(images, labels, batch_size, True, accelerator))
            runs["lightning_no_monitor"].append(lightning_epoch(images, labels, batch_size, False, accelerator))
        med = {k: statistics.median(v) for k, v in runs.items()}
        rows.append((batch_size, med))
    print()
    print("| batch | bare loop (samples/s) | lightning_rect + monitor | lightning_rect, no monitor | ratio vs bare | monitor cost |")
    print("|---|---|---|---|---|---|")
    for batch_size, med in rows:
        ratio = med["lightning"] / med["bare"]
        monitor_ratio = med["lightning"] / med["lightning_no_monitor"]
        print(f"| {batch_size} | {med['bare']:.0f} | {med['lightning']:.0f} | {med['lightning_no_monitor']:.0f} "
              f"| {ratio:.3f} | {100 * (1 - monitor_ratio):.1f}% |")


if __name__ == "__main__":
    main()
