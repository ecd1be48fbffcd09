"""Minibatches fetched whole from tensors in memory: shuffling per epoch, sharding per rank, the base data module."""

from pathlib import Path

import torch
from helpers.threads import one_torch_thread
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_rect.callbacks.sparsity import padded_rows
from lightning_rect.data.base import InMemoryDataModule, fixed_split, labeled_subset
from lightning_rect.data.batches import Affine, EpochShuffle, in_memory_loader
from lightning_rect.data.digits import DigitsDataModule


def epoch_ids(batches: DataLoader, epoch: int) -> torch.Tensor:
    batches.sampler.set_epoch(epoch)
    return torch.cat([yb for _, yb in batches])


def make(n=103, batch=10, shuffle=True, rank=0, world=1, seed=0):
    x = torch.arange(n).float().unsqueeze(1)
    y = torch.arange(n)  # the label is the example's index
    return in_memory_loader(x, y, batch, EpochShuffle(n, shuffle, seed, rank, world))


def test_every_example_exactly_once_per_epoch_in_a_new_order():
    batches = make()
    first, second = epoch_ids(batches, 0), epoch_ids(batches, 1)
    assert torch.equal(first.sort().values, torch.arange(103))
    assert torch.equal(second.sort().values, torch.arange(103))
    assert not torch.equal(first, second)
    assert torch.equal(first, epoch_ids(make(), 0))  # the order depends only on (seed, epoch)
    assert len(batches) == 11 and [len(y) for _, y in batches][-1] == 3


def test_two_ranks_shard_the_epoch_and_together_cover_it():
    r0, r1 = make(rank=0, world=2), make(rank=1, world=2)
    a, b = epoch_ids(r0, 3), epoch_ids(r1, 3)
    assert len(r0) == len(r1)  # equal batch counts, as DDP training needs
    assert len(a) == len(b) == 52
    union = torch.cat([a, b])
    assert set(union.tolist()) == set(range(103))
    assert len(set(a.tolist()) & set(b.tolist())) <= 1  # only the wrap-around padding example repeats


def test_evaluation_shards_are_disjoint_and_unpadded():
    a = epoch_ids(make(shuffle=False, rank=0, world=2, batch=7), 0)
    b = epoch_ids(make(shuffle=False, rank=1, world=2, batch=7), 0)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(103))


def test_the_sparsity_monitor_reads_padding_in_training_shares_only():
    """``SparsityMonitor`` reads a ``DistributedSampler``'s padding from ``total_size``: the training
    shares of 7 examples on 2 ranks end, on rank 1, with a copy of an example; evaluation shares
    (4 + 3 examples) repeat none."""
    for rank, padded in ((0, 0), (1, 1)):
        train = make(n=7, batch=3, rank=rank, world=2)
        assert [padded_rows(train, b) for b in range(len(train))] == [0, padded]
        evaluation = make(n=7, batch=3, shuffle=False, rank=rank, world=2)
        assert [padded_rows(evaluation, b) for b in range(len(evaluation))] == [0] * len(evaluation)


def test_affine_transform_scales_and_flattens():
    out = Affine(scale=2 / 255, offset=-1)(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0]]))


def test_labeled_subset_is_class_balanced_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    keep = labeled_subset(y, 0.1, seed=1)
    assert torch.bincount(y[keep]).tolist() == [5, 3, 2]
    assert torch.equal(keep, labeled_subset(y, 0.1, seed=1))
    assert not torch.equal(keep, labeled_subset(y, 0.1, seed=2))


def test_digits_split_is_fixed_disjoint_and_scaled():
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sizes == {"train": 1197, "val": 300, "test": 300}
    assert 0.0 <= min(v[0].min().item() for v in dm.splits.values())
    assert max(v[0].max().item() for v in dm.splits.values()) == 1.0
    assert set(torch.cat([v[1] for v in dm.splits.values()]).tolist()) == set(range(10))
    other = DigitsDataModule(seed=5)
    other.setup("fit")
    assert torch.equal(other.splits["test"][0], dm.splits["test"][0])  # split ignores the run seed
    parts = fixed_split(1797, [1197, 300, 300], seed=0)
    assert len(set(torch.cat(parts).tolist())) == 1797  # disjoint index sets


def test_digits_labeled_fraction_shrinks_only_training():
    dm = DigitsDataModule(labeled_fraction=0.1)
    dm.setup("fit")
    assert 110 <= len(dm.splits["train"][1]) <= 130
    assert len(dm.splits["val"][1]) == 300


# -- under a real Trainer -------------------------------------------------------------------------
class IndexedExamples(InMemoryDataModule):
    """40 training examples whose label is their index, so a batch's labels show the epoch's order."""

    def __init__(self) -> None:
        super().__init__(batch_size=8, seed=3)
        self.input_size, self.num_classes = 1, 40

    def load_splits(self):
        x, y = torch.arange(40.0).unsqueeze(1), torch.arange(40)
        return {"train": (x, y), "val": (x[:8], y[:8]), "test": (x[:8], y[:8])}


class FirstBatchRecorder(LightningModule):
    """One weight; records the labels of every epoch's first training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.first_batch: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.first_batch.setdefault(self.current_epoch, y.tolist())
        return ((self.weight * x - 1) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_recording(root: Path, max_epochs: int, ckpt_path: Path | None = None) -> dict[int, list[int]]:
    model = FirstBatchRecorder()
    every_epoch = ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1)
    trainer = Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[every_epoch],
        default_root_dir=root,
    )
    with one_torch_thread():
        trainer.fit(model, datamodule=IndexedExamples(), ckpt_path=ckpt_path)
    return model.first_batch


def test_trainer_sets_the_epoch_new_order_each_epoch_same_order_after_resuming(tmp_path):
    """Lightning calls ``set_epoch`` on the loaders' ``EpochShuffle``: each epoch of ``Trainer.fit`` is
    shuffled by (seed, epoch), and a run resumed from a checkpoint repeats the uninterrupted order."""
    straight = fit_recording(tmp_path / "straight", max_epochs=3)
    expected = {}
    for epoch in range(3):
        sampler = EpochShuffle(40, shuffle=True, seed=3)
        sampler.set_epoch(epoch)
        expected[epoch] = sampler.indices()[:8].tolist()
    assert straight == expected  # epoch e was served set_epoch(e)'s order
    assert len({tuple(first) for first in straight.values()}) == 3  # a new order every epoch

    interrupted = fit_recording(tmp_path / "interrupted", max_epochs=2)
    assert interrupted == {0: straight[0], 1: straight[1]}
    resumed = fit_recording(tmp_path / "resumed", max_epochs=3, ckpt_path=tmp_path / "interrupted" / "epoch=1.ckpt")
    assert resumed == {2: straight[2]}  # only the third epoch ran, in the uninterrupted run's order
