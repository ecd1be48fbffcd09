"""The data modules' ``DataLoader`` against the ``InMemoryBatches`` iterable it replaced, side by side.

    python benchmarks/dataloader.py                # 9 repeats, about 3-6 minutes on 2 busy cores
    python benchmarks/dataloader.py --repeats 15   # tighter medians

One torch thread. MNIST-shaped uint8 images held in memory, converted per batch
(``Affine(scale=1 / 255)``, as ``MNISTDataModule`` does), served at batch 10 by either

- **old**: a copy of the former ``InMemoryBatches`` (a plain iterable slicing the epoch's index
  tensor) with its ``EpochShuffle``, kept below for this comparison only;
- **new**: what ``InMemoryDataModule.train_dataloader()`` returns now: a ``torch.utils.data.DataLoader``
  over ``InMemoryDataset`` (one ``__getitems__`` per batch, collate returning it as is).

Three measurements for each, in a rotating order within every repeat (the machine's speed drifts
by several percent over tens of seconds; the figures are medians of per-repeat ratios new/old):

1. **loader alone**: batches per second of iterating one training epoch, nothing else;
2. **data path of a plain fit**: steps per second of ``Trainer.fit`` on a model with one weight,
   whose step costs next to nothing, so what is timed is the loader plus Lightning's own loop;
3. **SparseMLP fit**: steps per second of ``Trainer.fit`` on ``SparseMLP`` 784-1000-1000-1000-10
   (``--hidden`` to change it), rectifiers, L1 0.001, SGD: what a paper run spends per step.

Each fit runs one epoch of ``--steps`` (``--mlp-steps``) batches with no logger, checkpoint,
progress bar or validation; it is timed from the end of its ``WARMUP``-th batch to the end of its
last, in the model's own ``on_train_batch_end`` hook. Two clocks: the process's CPU time, which
other processes on a busy machine barely touch (they take the cores away, not this process's
work), and wall time, which they do; the figures per second are per CPU second and per second.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import lightning as L
import torch
from measure import machine_load, quartiles

from lightning_rect import SparseMLP
from lightning_rect.data.base import InMemoryDataModule
from lightning_rect.data.batches import Affine

WARMUP = 20  # batches not timed
BATCH = 10


# -- the former loader, verbatim but for the names ------------------------------------------------
class OldEpochShuffle:
    def __init__(self, num_examples: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.num_examples = num_examples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.num_examples / self.world_size)
        return len(range(self.rank, self.num_examples, self.world_size))

    def indices(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.rank, self.num_examples, self.world_size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        padded = len(self) * self.world_size
        if padded > self.num_examples:
            order = torch.cat([order, order[: padded - self.num_examples]])
        return order[self.rank :: self.world_size]


class OldInMemoryBatches:
    batch_sampler = None

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        sampler: OldEpochShuffle,
        transform=None,
        drop_last: bool = False,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.sampler = sampler
        self.transform = transform
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.sampler.indices()
        x, y, transform = self.x, self.y, self.transform
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = indices[start : start + self.batch_size]
            xb = x[idx]
            yield (transform(xb) if transform is not None else xb), y[idx]


# -- data modules -----------------------------------------------------------------------------------
class SyntheticMNIST(InMemoryDataModule):
    """MNIST-shaped uint8 images, random labels; the new loaders."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(batch_size=BATCH)
        self.images, self.labels = images, labels
        self.input_size, self.num_classes = 784, 10
        self.transform = Affine(scale=1 / 255)

    def load_splits(self):
        val = (self.images[:100], self.labels[:100])
        return {"train": (self.images, self.labels), "val": val, "test": val}


class OldSyntheticMNIST(SyntheticMNIST):
    """The same data through the former ``InMemoryBatches``."""

    def train_dataloader(self) -> OldInMemoryBatches:
        if self.splits is None:
            self.setup()
        x, y = self.splits["train"]
        return OldInMemoryBatches(x, y, self.batch_size, OldEpochShuffle(len(y), True, self.seed), self.transform)


LOADERS = {"old": OldSyntheticMNIST, "new": SyntheticMNIST}


# -- measurements -----------------------------------------------------------------------------------
def clocks() -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds)."""
    return time.process_time(), time.perf_counter()


class Timed:
    """Mixin: notes both clocks at the end of the ``WARMUP``-th and the last training batch."""

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 == WARMUP:
            self.start = clocks()
        if batch_idx + 1 == self.trainer.num_training_batches:
            self.seconds = tuple(end - start for end, start in zip(clocks(), self.start))


class OneWeight(Timed, L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return self.weight.sum()  # no work on the batch: the step times the data path and the loop

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class TimedSparseMLP(Timed, SparseMLP):
    pass


def fit_steps_per_second(dm: InMemoryDataModule, model: Timed, steps: int) -> tuple[float, float]:
    """Steps per (CPU second, wall second)."""
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    return tuple((steps - WARMUP) / seconds for seconds in model.seconds)


def iterate_batches_per_second(dm: InMemoryDataModule) -> tuple[float, float]:
    """Batches per (CPU second, wall second) of one epoch of the training loader."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    start = clocks()
    count = sum(1 for _ in loader)
    return tuple(count / (end - begin) for end, begin in zip(clocks(), start))


def main(argv: list[str] | None = None) -> dict[str, list[list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=3000, help="batches per epoch: loader alone and data path")
    parser.add_argument("--mlp-steps", type=int, default=400, help="batches per epoch of the SparseMLP fit")
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000, 1000])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a script, not the library: one thread, as the comparison states
    generator = torch.Generator().manual_seed(0)
    examples = max(args.steps, args.mlp_steps) * BATCH
    images = torch.randint(0, 256, (examples, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (examples,), generator=generator)

    def data(kind: str, steps: int) -> InMemoryDataModule:
        return LOADERS[kind](images[: steps * BATCH], labels[: steps * BATCH])

    measures: dict[str, Callable[[str], tuple[float, float]]] = {
        "loader alone (batches/s)": lambda kind: iterate_batches_per_second(data(kind, args.steps)),
        "data path of a plain fit (steps/s)": lambda kind: fit_steps_per_second(
            data(kind, args.steps), OneWeight(), args.steps
        ),
        f"SparseMLP 784-{'-'.join(map(str, args.hidden))}-10 fit (steps/s)": lambda kind: fit_steps_per_second(
            data(kind, args.mlp_steps), TimedSparseMLP(784, 10, args.hidden), args.mlp_steps
        ),
    }
    print(f"batch {BATCH}, torch threads {torch.get_num_threads()}, {machine_load()} at the start", file=sys.stderr)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {(name, kind): [] for name in measures for kind in LOADERS}
    kinds = list(LOADERS)
    for repeat in range(args.repeats):
        for name, measure in measures.items():
            for kind in kinds[repeat % 2 :] + kinds[: repeat % 2]:  # alternate which loader goes first
                torch.manual_seed(0)
                runs[name, kind].append(measure(kind))
        print(
            f"repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(
                f"{name.split(' (')[0]} {runs[name, 'new'][-1][0] / runs[name, 'old'][-1][0]:.3f} (CPU) "
                f"{runs[name, 'new'][-1][1] / runs[name, 'old'][-1][1]:.3f} (wall)"
                for name in measures
            ),
            file=sys.stderr,
        )
    print(f"\n{machine_load()} at the end\n")
    print(
        "| measurement | old InMemoryBatches, per CPU s | new DataLoader, per CPU s | ratio new/old by CPU time "
        "| ratio new/old by wall time |"
    )
    print("|---|---|---|---|---|")
    ratios = {}
    for name in measures:
        old, new = runs[name, "old"], runs[name, "new"]
        ratios[name] = [[b[clock] / a[clock] for a, b in zip(old, new)] for clock in (0, 1)]
        cpu, wall = ratios[name]
        print(
            f"| {name} | {statistics.median(a for a, _ in old):.0f} | {statistics.median(b for b, _ in new):.0f} "
            f"| {statistics.median(cpu):.3f} ({quartiles(cpu)}) "
            f"| {statistics.median(wall):.3f} ({quartiles(wall)}) |"
        )
    return ratios


if __name__ == "__main__":
    main()
