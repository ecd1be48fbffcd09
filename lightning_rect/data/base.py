"""Base class of every data module: whole splits as tensors in memory, served by ``DataLoader``s that
fetch a whole batch per index list (``lightning_rect.data.batches``)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from lightning_rect.checks import check_positive_int
from lightning_rect.data.batches import BatchTransform, EpochShuffle, in_memory_loader
from lightning_rect.errors import ConfigError, DataFileError

Split = tuple[torch.Tensor, torch.Tensor]
SPLITS = ("train", "val", "test")


class InMemoryDataModule(LightningDataModule):
    """Subclasses set ``input_size`` and ``num_classes`` in ``__init__`` (LightningCLI links them into
    the model before anything is loaded) and implement ``load_splits()``.

    Args:
        batch_size: training minibatch size (the paper: 10).
        eval_batch_size: minibatch size for validation and test; only speed depends on it.
        labeled_fraction: fraction of the training labels fine-tuning may see, in (0, 1]; the
            subset is fixed by ``seed`` and class-balanced. Pre-training configs keep 1.0 so the
            auto-encoder sees every training input.
        seed: seeds the labeled subset and the per-epoch shuffling.
    """

    input_size: int
    num_classes: int
    transform: BatchTransform | None = None

    def __init__(
        self, batch_size: int = 10, eval_batch_size: int = 1000, labeled_fraction: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__()
        check_positive_int("data batch_size", batch_size)
        check_positive_int("data eval_batch_size", eval_batch_size)
        if not (isinstance(labeled_fraction, (int, float)) and 0 < labeled_fraction <= 1):
            raise ConfigError(f"labeled_fraction must be in (0, 1], got {labeled_fraction!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.labeled_fraction = float(labeled_fraction)
        self.seed = seed
        self.splits: dict[str, Split] | None = None

    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y)}``; ``x`` as stored, before ``transform``.

        Called by ``setup()``, after Lightning's ``prepare_data()``: only read what is there (and
        never call ``prepare_data()``), raising ``DataFileError`` naming a missing file and the fix.
        """
        raise NotImplementedError

    def data_source(self) -> str:
        """Where the examples come from (a folder, files), for the messages about them."""
        return type(self).__name__

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            splits = self.load_splits()
            check_no_empty_split(type(self).__name__, splits, self.data_source())
            check_finite_inputs(type(self).__name__, splits, self.data_source())
            self.splits = self.with_labeled_fraction(splits)

    def with_labeled_fraction(self, splits: dict[str, Split]) -> dict[str, Split]:
        """``splits`` with the training split cut down to the labeled subset ``labeled_fraction`` keeps."""
        if self.labeled_fraction < 1:
            x, y = splits["train"]
            keep = self.labeled_indices(y)
            splits = {**splits, "train": (x[keep], y[keep])}
        return splits

    def labeled_indices(self, y: torch.Tensor) -> torch.Tensor:
        """Training examples kept when ``labeled_fraction < 1``."""
        return labeled_subset(y, self.labeled_fraction, self.seed)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        # Without a Trainer (Fabric, a script): the process group, so that the sampler, which
        # Fabric keeps as it is a DistributedSampler, still gives each process its own share.
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _set_up_splits(self) -> dict[str, Split]:
        """``splits``, loaded first where nothing called ``setup`` yet (Fabric, a script)."""
        if self.splits is None:
            self.setup()
        assert self.splits is not None  # setup() sets them
        return self.splits

    def _batches(self, split: str, shuffle: bool) -> DataLoader:
        x, y = self._set_up_splits()[split]
        rank, world = self._rank_and_world()
        sampler = EpochShuffle(len(y), shuffle=shuffle, seed=self.seed, rank=rank, world_size=world)
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        return in_memory_loader(x, y, batch_size, sampler, self.transform)

    def train_dataloader(self) -> DataLoader:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._batches("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._batches("test", shuffle=False)


def check_no_empty_split(name: str, splits: dict[str, Split], source: str) -> None:
    """DataFileError naming the sizes when a split holds no example: training would run without
    validation (no best epoch to select) or test nothing, and still end as if it had succeeded."""
    sizes = {split: len(splits[split][1]) for split in SPLITS if split in splits}
    empty = [split for split, size in sizes.items() if size == 0]
    if empty:
        listed = ", ".join(f"{split} {size}" for split, size in sizes.items())
        raise DataFileError(
            f"{name}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
            f"({listed} examples, from {source}): the data holds too few examples for the split "
            "settings; if a file is short, delete it, then download or copy it again, else change "
            "the settings that size the splits"
        )


#: Largest input magnitude taken as data: every bundled data set lies within [-1, 1] once scaled,
#: and a value far beyond it is a damaged file or a missing scaling, which would train on silently
#: (a loss of 1e32) or end as "diverged" with advice about the learning rate.
MAX_ABS_INPUT = 1e6


def check_finite_inputs(name: str, splits: dict[str, Split], source: str) -> None:
    """DataFileError naming the split and how many inputs are not finite or far out of range (float
    storage only: integer storage such as uint8 pixels is bounded by its type)."""
    for split in SPLITS:
        if split not in splits:
            continue
        x = splits[split][0]
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.layout == torch.strided):
            continue
        bad = ~torch.isfinite(x) | (x.abs() > MAX_ABS_INPUT)
        count = int(bad.sum())
        if count:
            worst = x[bad].abs().max().item() if torch.isfinite(x[bad]).any() else float("nan")
            raise DataFileError(
                f"{name}: {count} {split} input value(s) are not finite or exceed {MAX_ABS_INPUT:g} in "
                f"magnitude (largest finite one {worst:.3g}; from {source}): the data is damaged or "
                "not scaled; check or replace the file before training"
            )


def labeled_subset(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded, class-balanced subset holding ``fraction`` of each class (at least one)."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        count = max(1, math.floor(fraction * len(members) + 0.5))
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(keep).sort().values


def fixed_split(num_examples: int, sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Disjoint index sets of the given sizes from a permutation fixed by ``seed``."""
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    return [order[a:b] for a, b in zip(bounds, bounds[1:])]
