"""The data modules hand Lightning and Fabric real ``torch.utils.data.DataLoader``s, so the features
that rely on one work: ``overfit_batches``, ``fabric.setup_dataloaders``, prediction writers' batch
indices, the batch-size tuner's stop at the data set's size; and under DDP (``ddp_spawn``, 2 CPU
processes) Lightning keeps the modules' own sharding instead of sharding the shares again."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.amazon_corpus import write_synthetic_corpus
from helpers.image_files import write_cifar, write_emnist, write_mnist
from helpers.norb_files import write_norb
from helpers.threads import one_torch_thread
from lightning import Fabric, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader

from lightning_rect.data import (
    AmazonReviewsDataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    MNISTDataModule,
    NISTPDataModule,
    NORBDataModule,
)
from lightning_rect.data.base import InMemoryDataModule
from lightning_rect.data.batches import EpochShuffle

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)


# -- every bundled module -----------------------------------------------------------------------
def digits(tmp_path: Path) -> InMemoryDataModule:
    return DigitsDataModule(eval_batch_size=100)


def mnist(tmp_path: Path) -> InMemoryDataModule:
    write_mnist(tmp_path)
    return MNISTDataModule(data_dir=str(tmp_path), val_size=6, eval_batch_size=4)


def cifar10(tmp_path: Path) -> InMemoryDataModule:
    write_cifar(tmp_path)
    return CIFAR10DataModule(data_dir=str(tmp_path), val_size=8, eval_batch_size=7)


def norb(tmp_path: Path) -> InMemoryDataModule:
    write_norb(tmp_path)
    dm = NORBDataModule(data_dir=str(tmp_path), val_size=12, eval_batch_size=8)
    dm.prepare_data()  # builds the cache setup() reads
    return dm


def amazon(tmp_path: Path) -> InMemoryDataModule:
    write_synthetic_corpus(tmp_path, reviews_per_class=20, unlabeled_reviews=5, background_size=100)
    return AmazonReviewsDataModule(str(tmp_path), domains=["books"], vocab_size=50, eval_batch_size=3)


def nistp(tmp_path: Path) -> InMemoryDataModule:
    write_emnist(tmp_path)
    return NISTPDataModule(data_dir=str(tmp_path), train_size=95, val_size=30, test_size=20, chunk_size=40)


MODULES = {"digits": digits, "mnist": mnist, "cifar10": cifar10, "norb": norb, "amazon": amazon, "nistp": nistp}
SPLIT_OF = {"train": "train", "val": "val", "test": "test", "predict": "test"}


@pytest.mark.parametrize("name", MODULES)
def test_every_bundled_module_serves_dataloaders_of_whole_float_batches(name, tmp_path):
    dm = MODULES[name](tmp_path)
    dm.setup()
    with one_torch_thread():
        for stage in ("train", "val", "test", "predict"):
            loader = getattr(dm, f"{stage}_dataloader")()
            assert isinstance(loader, DataLoader), stage
            _, y = dm.splits[SPLIT_OF[stage]]
            # NISTP trains on a stream of train_size characters distorted on the fly
            size = dm.train_size if name == "nistp" and stage == "train" else len(y)
            assert len(loader.dataset) == size, stage
            batches = list(loader)
            assert len(batches) == len(loader), stage
            xb, yb = batches[0]
            assert xb.dtype == torch.float32 and xb.shape == (len(yb), dm.input_size), stage
            if stage != "train":  # evaluation: the split in order, each example once
                assert torch.equal(torch.cat([b for _, b in batches]), y), stage


# -- a real Trainer on examples whose label is their index ----------------------------------------
class Indexed(InMemoryDataModule):
    """``n`` examples per split whose label is their index, so a batch's labels say which examples it holds."""

    def __init__(self, n: int = 40, batch_size: int = 8, eval_batch_size: int = 6) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=3)
        self.n = n
        self.input_size, self.num_classes = 1, n

    def load_splits(self):
        x, y = torch.arange(float(self.n)).unsqueeze(1), torch.arange(self.n)
        return {"train": (x, y), "val": (x, y), "test": (x, y)}


class Recorder(LightningModule):
    """One weight; records the labels of every training batch, per epoch; counts what each stage saw."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[list[int]]] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.setdefault(self.current_epoch, []).append(y.tolist())
        self.log("train_n", float(len(y)), reduce_fx="sum", on_step=False, on_epoch=True, sync_dist=True)
        return ((self.weight * x - 1) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        _, y = batch
        for name, value in (("val_n", len(y)), ("val_sum", y.sum()), ("val_sq", (y * y).sum())):
            self.log(name, float(value), reduce_fx="sum", on_step=False, on_epoch=True, sync_dist=True)

    def predict_step(self, batch, batch_idx):
        return batch[1]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_overfit_batches_trains_on_the_same_batches_every_epoch():
    """Lightning replaces a shuffling sampler by a ``SequentialSampler`` (and says so); before, the
    data modules' loaders kept shuffling and every epoch trained on other batches."""
    model = Recorder()
    with one_torch_thread(), pytest.warns(UserWarning, match="turning off the train dataloader shuffling"):
        Trainer(max_epochs=3, overfit_batches=2, accelerator="cpu", devices=1, **QUIET).fit(model, datamodule=Indexed())
    assert model.seen[0] == [list(range(8)), list(range(8, 16))]
    assert model.seen[1] == model.seen[2] == model.seen[0]


def test_overfit_batches_trains_nistp_on_the_same_distorted_batches_every_epoch(tmp_path):
    """The stream's distortions are seeded by the epoch its sampler was set to: with Lightning's
    ``SequentialSampler`` in its place, every epoch gets epoch 0's characters and distortions."""
    model = Recorder()
    seen = {}

    class Inputs(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.setdefault(trainer.current_epoch, []).append(batch[0].clone())

    with one_torch_thread(), pytest.warns(UserWarning, match="turning off the train dataloader shuffling"):
        Trainer(max_epochs=2, overfit_batches=2, accelerator="cpu", devices=1, callbacks=[Inputs()], **QUIET).fit(
            model, datamodule=nistp(tmp_path)
        )
    assert len(seen[0]) == len(seen[1]) == 2
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[1]))


def test_fabric_sets_up_the_loader_and_sets_its_epoch():
    dm = Indexed()
    fabric = Fabric(accelerator="cpu", devices=1)
    loader = fabric.setup_dataloaders(dm.train_dataloader())
    for epoch in range(2):  # Fabric calls set_epoch(number of passes so far)
        expected = EpochShuffle(40, shuffle=True, seed=3)
        expected.set_epoch(epoch)
        assert torch.cat([y for _, y in loader]).tolist() == expected.indices().tolist()


def test_fabric_gets_each_process_its_share_from_the_process_group(monkeypatch):
    """Without a Trainer the shares follow ``torch.distributed``: Fabric keeps the sampler (it is a
    ``DistributedSampler``), so a loader built for rank 0 of 1 would feed every process everything."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    sampler = Indexed(n=41).val_dataloader().sampler
    assert (sampler.rank, sampler.world_size) == (1, 2)
    assert sampler.indices().tolist() == list(range(1, 41, 2))


class IndicesWriter(BasePredictionWriter):
    """Writes each process's batch indices and predictions to ``folder/rank<r>.json``."""

    def __init__(self, folder: Path) -> None:
        super().__init__(write_interval="batch")
        self.folder = folder
        self.rows: list[tuple[list[int], list[int]]] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.rows.append((list(batch_indices), prediction.tolist()))
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))


def written(folder: Path) -> list[tuple[list[int], list[int]]]:
    return [row for path in sorted(folder.glob("rank*.json")) for row in json.loads(path.read_text())]


def test_a_prediction_writer_gets_the_batch_indices(tmp_path):
    with one_torch_thread():
        Trainer(accelerator="cpu", devices=1, callbacks=[IndicesWriter(tmp_path)], **QUIET).predict(
            Recorder(), datamodule=Indexed(), return_predictions=False
        )
    rows = written(tmp_path)
    assert [indices for indices, _ in rows] == [list(range(i, min(i + 6, 40))) for i in range(0, 40, 6)]
    assert all(indices == labels for indices, labels in rows)  # the indices name the examples predicted


@pytest.mark.slow  # three trial fits and a checkpoint round trip: about 2 s
def test_batch_size_tuner_stops_at_the_size_of_the_data_set(tmp_path):
    """The tuner reads ``len(loader.dataset)`` and stops doubling once the batch holds the data set;
    before, it could not tell the size and doubled until ``max_trials``."""
    dm = Indexed(n=40)
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", devices=1, limit_val_batches=0, default_root_dir=tmp_path, **QUIET
    )  # the tuner's temporary checkpoint goes to default_root_dir
    with one_torch_thread():
        size = Tuner(trainer).scale_batch_size(
            Recorder(), datamodule=dm, mode="power", init_val=10, steps_per_trial=1, max_trials=8
        )
    assert size == dm.batch_size == 40  # 10, 20, 40: the whole data set in one batch


# -- DDP: 2 CPU processes ---------------------------------------------------------------------------
@pytest.mark.slow  # two launches of 2 processes each: several seconds
def test_ddp_spawn_keeps_the_modules_sharding_and_counts_each_evaluation_example_once(tmp_path, monkeypatch):
    """Lightning keeps the modules' ``DistributedSampler`` (no second sharding, no padding of the
    evaluation shares): 41 examples train as 2 x 21 (one padded), validate and predict as 21 + 20."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ddp = dict(accelerator="cpu", devices=2, strategy="ddp_spawn", **QUIET)
    n = 41
    trainer = Trainer(max_epochs=1, **ddp)
    trainer.fit(Recorder(), datamodule=Indexed(n=n, batch_size=4, eval_batch_size=6))
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert metrics["train_n"] == 2 * 21  # each process's padded half, not a quarter
    assert (metrics["val_n"], metrics["val_sum"], metrics["val_sq"]) == (n, sum(range(n)), sum(i * i for i in range(n)))

    Trainer(callbacks=[IndicesWriter(tmp_path)], **ddp).predict(
        Recorder(), datamodule=Indexed(n=n, eval_batch_size=6), return_predictions=False
    )
    rows = written(tmp_path)
    assert sorted(i for indices, _ in rows for i in indices) == list(range(n))
    assert all(indices == labels for indices, labels in rows)


class PoisonedDigits(DigitsDataModule):
    """The digits with 3e38 in 50 training pixels: a damaged file, or data that was never scaled."""

    def load_splits(self):
        splits = super().load_splits()
        x, y = splits["train"]
        x = x.clone()
        x.view(-1)[torch.arange(50) * 7] = 3e38
        return {**splits, "train": (x, y)}


@pytest.mark.parametrize("model", ["SparseMLP", "StackedDAE"])
def test_inputs_far_out_of_range_stop_the_fit_at_setup_with_the_split_named(model):
    from lightning_rect import SparseMLP, StackedDAE
    from lightning_rect.errors import DataFileError

    net = SparseMLP(64, 10, [8]) if model == "SparseMLP" else StackedDAE(64, [8], epochs_per_layer=1)
    trainer = Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    with pytest.raises(
        DataFileError,
        match=r"PoisonedDigits: 50 train input value\(s\) are not finite or exceed "
        r"1e\+06 in magnitude \(largest finite one 3e\+38",
    ):
        trainer.fit(net, datamodule=PoisonedDigits())
    assert trainer.global_step == 0  # refused before any step, not "diverged" after some
