import json
import warnings
from unittest.mock import MagicMock

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.activations import Rectifier, SharpSoftplus, Sigmoid, Softplus, Tanh
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.callbacks.sparsity import (
    RATES_FILE,
    UnitCounter,
    firing_rate_histogram,
    is_nonnegative,
    log_firing_rate_histograms,
    save_firing_rates,
)
from lightning_rect.data import DigitsDataModule
from lightning_rect.errors import ConfigError


class Fixed(nn.Module):
    """Stands in for an activation: returns the rows given to it, so zeros are known exactly."""

    def forward(self, x):
        return x


class HandBuilt(L.LightningModule):
    """Two 'layers' whose outputs are the batch itself (layer 1) and its first 2 columns (layer 2)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = Fixed(), Fixed()
        self.weight = nn.Parameter(torch.zeros(()))

    def sparsity_modules(self):
        return [self.first, self.second]

    def forward(self, x):
        return self.second(self.first(x)[:, :2])

    def test_step(self, batch, batch_idx):
        self(batch[0])


class Loader:
    """An iterable of fixed batches (a plain list would read as several dataloaders)."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


def batches():
    # layer 1, 4 units: unit 0 always 0 (dead), unit 1 zero in batch 1 only (alive), units 2-3 non-zero
    b1 = torch.tensor([[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 3.0, 0.0]])
    b2 = torch.tensor([[0.0, 5.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    return [(b1, torch.zeros(2)), (b2, torch.zeros(2))]


def expected():
    # layer 1: zeros 3+3+... count: b1 has 5 zeros of 8, b2 has 3 zeros of 8 -> 8/16
    # layer 2 sees columns 0-1: b1 4 zeros of 4, b2 3 zeros of 4 -> 7/8; unit 0 dead, unit 1 alive
    return {
        "test/sparsity/layer_1": 0.5,
        "test/dead/layer_1": 0.25,
        "test/sparsity/layer_2": 7 / 8,
        "test/dead/layer_2": 0.5,
        "test/sparsity/mean": (0.5 + 7 / 8) / 2,
        "test/dead/mean": 0.375,
    }


def test_exact_values_on_hand_built_activations():
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[SparsityMonitor()]
    )
    result = trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)[0]
    for key, value in expected().items():
        assert result[key] == pytest.approx(value), key


def test_unit_dead_in_one_batch_but_alive_in_another_is_not_dead():
    only_first = batches()[:1]
    trainer = L.Trainer(logger=False, enable_progress_bar=False, callbacks=[SparsityMonitor()])
    with pytest.warns(UserWarning, match="every unit of layer_2 output exactly 0 for the whole test epoch"):
        result = trainer.test(HandBuilt(), dataloaders=Loader(only_first), verbose=False)[0]  # layer 2 all 0
    assert result["test/dead/layer_1"] == pytest.approx(0.5)  # unit 1 is zero in batch 1 alone
    result = trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)[0]
    assert result["test/dead/layer_1"] == pytest.approx(0.25)  # ... but fires in batch 2


class PlainUserModel(L.LightningModule):
    """A user's module with no lightning_rect parts: torch ReLU and Tanh layers."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 10))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.net(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize(
    "modules,expected",
    [
        (["torch.nn.ReLU"], ["net.1"]),
        (["net.3"], ["net.3"]),
        (["Tanh"], ["net.3"]),
        (["ReLU", "net.3"], ["net.1", "net.3"]),
    ],
)
def test_user_layers_are_logged_under_their_module_names_and_hooks_are_removed(modules, expected):
    model = PlainUserModel()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[SparsityMonitor(modules=modules)],
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    logged = {k.removeprefix("val/sparsity/") for k in trainer.callback_metrics if k.startswith("val/sparsity/")}
    assert logged == {*expected, "mean"}
    assert "train/dead/mean" in trainer.callback_metrics
    assert all(not m._forward_hooks for m in model.modules())  # removed when training ended


def test_a_model_without_sparsity_modules_must_name_its_hidden_activations():
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, callbacks=[SparsityMonitor()])
    with pytest.raises(ConfigError, match=r"has no sparsity_modules\(\).*modules=\[\.\.\.\].*'net.1'"):
        trainer.fit(PlainUserModel(), datamodule=DigitsDataModule())


def test_an_entry_that_matches_nothing_is_an_error_even_beside_one_that_matches():
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, callbacks=[SparsityMonitor(modules=["net.1", "net.9"])]
    )
    with pytest.raises(ConfigError, match=r"\['net.9'\] match no module of PlainUserModel"):
        trainer.fit(PlainUserModel(), datamodule=DigitsDataModule())


@pytest.mark.slow
def test_mid_epoch_validation_leaves_the_training_counts_whole():
    # Same seed and data with and without validation in the middle of each epoch: training is the
    # same, so the training sparsity must be too, and validation gets its own values.
    def run(val_check_interval):
        L.seed_everything(0)
        model = SparseMLP(64, 10, [32, 16], lr=0.05)
        trainer = L.Trainer(
            max_epochs=2,
            val_check_interval=val_check_interval,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[SparsityMonitor()],
        )
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=10))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    whole, split = run(1.0), run(0.25)
    for key in ("train/sparsity/layer_1", "train/sparsity/layer_2", "train/dead/mean"):
        assert split[key] == pytest.approx(whole[key], abs=1e-6), key
    assert 0 < split["val/sparsity/layer_1"] < 1


def fit_digits(activation, l1):
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=10)
    model = SparseMLP(64, 10, [256, 256], activation=activation, l1=l1, lr=0.05)
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor()],
    )
    trainer.fit(model, datamodule=dm)
    trained = dict(trainer.callback_metrics)  # trainer.test replaces callback_metrics
    return trainer.test(model, datamodule=dm, verbose=False)[0], trained


@pytest.mark.slow
def test_l1_adds_exact_zeros_and_tanh_has_none():
    relu, trained = fit_digits("rectifier", 0.001)
    plain, _ = fit_digits("rectifier", 0.0)
    # the paper's claim, same data and seed: the penalty adds exact zeros without hurting the error
    assert relu["test/sparsity/mean"] > plain["test/sparsity/mean"] + 0.03
    assert relu["test/err"] < 0.08 and plain["test/err"] < 0.08
    assert 0 <= relu["test/dead/mean"] < 1
    assert 0 < trained["train/sparsity/layer_2"] < 1 and "train/dead/mean" in trained
    tanh, _ = fit_digits("tanh", 0.0)
    assert tanh["test/sparsity/mean"] < 0.01 and tanh["test/err"] < 0.1


@pytest.mark.slow
def test_works_on_stacked_dae_layer_by_layer():
    L.seed_everything(0)
    model = StackedDAE(64, 10, [32, 16], epochs_per_layer=1)
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[SparsityMonitor()]
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=20))
    assert "val/sparsity/layer_2" in trainer.callback_metrics
    assert 0 < trainer.callback_metrics["val/sparsity/layer_1"] < 1


def test_every_config_turns_the_monitor_on():
    import yaml
    from conftest import ROOT

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        callbacks = yaml.safe_load(path.read_text())["trainer"].get("callbacks") or []
        assert any(cb.get("class_path") == "lightning_rect.callbacks.SparsityMonitor" for cb in callbacks), path.name


def test_counter_counts_negative_outputs_as_active():
    # tanh-like outputs: -1 and +1 in one column must count as two active outputs, not cancel
    counter = UnitCounter(nonnegative=False)
    counter.add(torch.tensor([[-1.0, 0.0, 0.5], [1.0, 0.0, -0.25]]))
    assert counter.counts.tolist() == [2.0, 0.0, 2.0]
    assert counter.rows == 2


def test_counter_without_abs_matches_count_nonzero_on_rectifier_outputs():
    counter = UnitCounter(nonnegative=True)
    outputs = [torch.relu(torch.randn(7, 5, generator=torch.Generator().manual_seed(s))) for s in range(3)]
    for h in outputs:
        counter.add(h)
    expected = sum(torch.count_nonzero(h, dim=0) for h in outputs)
    assert torch.equal(counter.counts, expected.double())


@pytest.mark.parametrize(
    "module,nonnegative",
    [
        (Rectifier(), True),
        (Softplus(), True),
        (Sigmoid(), True),
        (SharpSoftplus(3.0), True),
        (nn.ReLU(), True),
        (nn.Sigmoid(), True),
        (Tanh(), False),
        (nn.Tanh(), False),
        (nn.LeakyReLU(), False),
        (nn.GELU(), False),
    ],
)
def test_which_activations_skip_the_abs(module, nonnegative):
    assert is_nonnegative(module) is nonnegative
    # the claim must hold: no negative output on inputs of either sign
    out = module(torch.linspace(-30, 30, 601))
    if nonnegative:
        assert (out >= 0).all()
    else:
        assert (out < 0).any()


def test_a_layer_dead_for_the_whole_epoch_is_warned_about_once():
    all_zero = [(torch.zeros(2, 4), torch.zeros(2)), (torch.zeros(3, 4), torch.zeros(3))]
    monitor = SparsityMonitor()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    with pytest.warns(
        UserWarning, match=r"every unit of layer_[12] output exactly 0 for the whole test epoch"
    ) as caught:
        result = trainer.test(HandBuilt(), dataloaders=Loader(all_zero), verbose=False)[0]
    assert result["test/dead/layer_1"] == 1.0 and result["test/dead/layer_2"] == 1.0
    dead_warnings = [w for w in caught if "every unit of layer" in str(w.message)]
    assert sorted(str(w.message).split("layer_")[1][0] for w in dead_warnings) == ["1", "2"]
    assert all("lower the learning rate" in str(w.message) for w in dead_warnings)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        trainer.test(HandBuilt(), dataloaders=Loader(all_zero), verbose=False)
    assert not [w for w in again if "every unit of layer" in str(w.message)]  # once per layer and stage


def test_partly_dead_layers_are_not_warned_about(recwarn):
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[SparsityMonitor()]
    )
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)  # layers 25% and 50% dead
    assert not [w for w in recwarn if "every unit of layer" in str(w.message)]


def test_firing_rates_are_each_units_nonzero_fraction():
    monitor = SparsityMonitor()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)
    x = torch.cat([b[0] for b in batches()])
    assert torch.equal(monitor.firing_rates["test"]["layer_1"], (x != 0).float().mean(0))
    assert torch.equal(monitor.firing_rates["test"]["layer_2"], (x[:, :2] != 0).float().mean(0))


# -- firing-rate histograms: kept, logged to W&B / TensorBoard, saved for the summary figure ------
def hand_histogram(columns: torch.Tensor, bins: int = 20) -> tuple[list[int], int]:
    """Per-unit non-zero fraction of hand-built outputs, binned by hand: [b/bins, (b+1)/bins), 1 in the last."""
    from fractions import Fraction

    counts = [0] * bins
    for unit in range(columns.shape[1]):
        rate = Fraction(int((columns[:, unit] != 0).sum()), columns.shape[0])
        counts[min(int(rate * bins), bins - 1)] += 1
    dead = int(((columns != 0).sum(0) == 0).sum())
    return counts, dead


def test_firing_rate_histogram_is_the_hand_count_of_each_units_nonzero_fraction():
    monitor = SparsityMonitor()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)
    x = torch.cat([b[0] for b in batches()])  # layer 1 rates: 0, 1/4, 1, 3/4; layer 2: 0, 1/4
    for layer, columns in (("layer_1", x), ("layer_2", x[:, :2])):
        histogram = monitor.firing_rate_histograms["test"][layer]
        counts, dead = hand_histogram(columns)
        assert list(histogram.counts) == counts and histogram.dead == dead, layer
    assert monitor.firing_rate_histograms["test"]["layer_1"].counts[0] == 1  # the dead unit, in bin 0
    assert [b for b, c in enumerate(monitor.firing_rate_histograms["test"]["layer_1"].counts) if c] == [0, 5, 15, 19]
    assert monitor.firing_rate_histograms["test"]["layer_1"].edges[:3] == [0.0, 0.05, 0.1]


def test_a_rate_on_a_bin_edge_lands_in_the_bin_it_opens():
    # 7 of 20 examples = 0.35 exactly: bin 7, although 0.35 in float32 is just below it
    histogram = firing_rate_histogram(torch.tensor([7.0, 0.0, 20.0, 1.0]), 20, bins=20)
    assert (
        histogram.counts[7] == 1 and histogram.counts[0] == 1 and histogram.counts[19] == 1 and histogram.counts[1] == 1
    )
    assert histogram.dead == 1 and histogram.units == 4


class RecordingWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose run (project ``proj``, id ``run-1``) is a recorder: nothing is
    started or sent."""

    def __init__(self, save_dir):
        super().__init__(save_dir=str(save_dir), project="proj", id="run-1")
        self.run = MagicMock()

    @property
    def experiment(self):
        return self.run


class RecordingTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger as the monitor sees it (tensorboard itself need not be installed)."""

    def __init__(self):  # not the real one, which needs tensorboard: only .experiment is used
        self.writer = MagicMock()

    @property
    def experiment(self):
        return self.writer


def test_histograms_go_to_wandb_as_wandb_histograms_and_the_rates_file_is_written(tmp_path):
    import wandb

    logger = RecordingWandbLogger(tmp_path)
    trainer = L.Trainer(
        logger=logger, enable_progress_bar=False, enable_model_summary=False, callbacks=[SparsityMonitor()]
    )
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)
    logged = [c.args[0] for c in logger.run.log.call_args_list if "test/firing_rate/layer_1" in c.args[0]]
    assert len(logged) == 1
    x = torch.cat([b[0] for b in batches()])
    for layer, columns in (("layer_1", x), ("layer_2", x[:, :2])):
        histogram = logged[0][f"test/firing_rate/{layer}"]
        assert isinstance(histogram, wandb.Histogram)
        assert histogram.histogram == hand_histogram(columns)[0]
        assert histogram.bins == pytest.approx([b / 20 for b in range(21)])
    assert logged[0]["trainer/global_step"] == 0
    # and the rates, for the summary figure, in the run's own folder (where ModelCheckpoint puts its
    # checkpoints/), not in save_dir, which every W&B run shares
    assert not (tmp_path / RATES_FILE).exists()
    saved = json.loads((tmp_path / "proj" / "run-1" / RATES_FILE).read_text())
    assert saved["bins"] == 20 and set(saved) == {"format", "bins", "test"}
    assert saved["test"]["layers"]["layer_1"] == {
        "rows": 4,
        "nonzero": [0, 1, 4, 3],
        "histogram": hand_histogram(x)[0],
        "dead": 1,
    }


def test_tensorboard_gets_the_same_bins_and_other_loggers_nothing(tmp_path):
    tensorboard, csv_logger = RecordingTensorBoardLogger(), CSVLogger(tmp_path)
    nonzero = torch.tensor([0.0, 1.0, 4.0, 3.0])
    histogram = firing_rate_histogram(nonzero, 4)
    log_firing_rate_histograms(
        [csv_logger, tensorboard], "val", {"layer_1": histogram}, {"layer_1": (nonzero, 4.0)}, 12
    )
    [call] = tensorboard.writer.add_histogram_raw.call_args_list
    assert call.args == ("val/firing_rate/layer_1",)
    assert call.kwargs["bucket_counts"] == list(histogram.counts) and call.kwargs["num"] == 4
    assert call.kwargs["bucket_limits"] == pytest.approx([b / 20 for b in range(1, 21)])
    assert call.kwargs["min"] == 0.0 and call.kwargs["max"] == 1.0 and call.kwargs["global_step"] == 12
    assert call.kwargs["sum"] == pytest.approx(2.0) and call.kwargs["sum_squares"] == pytest.approx(1 / 16 + 1 + 9 / 16)
    assert not list(tmp_path.rglob("*"))  # the CSV logger was not touched


class HandBuiltWithValidation(HandBuilt):
    def validation_step(self, batch, batch_idx):
        self(batch[0])


def test_rates_file_keeps_validation_and_test_and_is_never_written_without_a_logger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quiet = {"enable_progress_bar": False, "enable_model_summary": False}
    trainer = L.Trainer(logger=False, callbacks=[SparsityMonitor()], **quiet)
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)
    assert not list(tmp_path.rglob("firing_rates.json"))  # no logger: nothing in the working folder

    logger = CSVLogger(tmp_path / "logs", version=0)
    trainer = L.Trainer(logger=logger, callbacks=[SparsityMonitor()], **quiet)
    with pytest.warns(UserWarning, match="every unit of layer_2 output exactly 0 for the whole val epoch"):
        trainer.validate(HandBuiltWithValidation(), dataloaders=Loader(batches()[:1]), verbose=False)
    trainer = L.Trainer(logger=logger, callbacks=[SparsityMonitor()], **quiet)
    trainer.test(HandBuiltWithValidation(), dataloaders=Loader(batches()), verbose=False)
    saved = json.loads((tmp_path / "logs" / "lightning_logs" / "version_0" / "firing_rates.json").read_text())
    assert saved["val"]["layers"]["layer_1"]["nonzero"] == [0, 0, 2, 1]  # batch 1 alone
    assert saved["test"]["layers"]["layer_1"]["nonzero"] == [0, 1, 4, 3]


def test_histograms_false_logs_and_writes_nothing_more(tmp_path):
    logger = RecordingWandbLogger(tmp_path)
    monitor = SparsityMonitor(histograms=False)
    trainer = L.Trainer(logger=logger, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)
    assert not [c for c in logger.run.log.call_args_list if any("firing_rate" in k for k in c.args[0])]
    assert not list(tmp_path.rglob(RATES_FILE)) and not monitor.firing_rate_histograms
    assert "test/sparsity/layer_1" in trainer.callback_metrics


# -- what a module runs, and how often, does not change the layers --------------------------------
class TwoLayerUserModel(L.LightningModule):
    """A user's MLP whose training step may recompute its activations in backward (activation
    checkpointing) or run the network twice; validation runs it once, plainly."""

    def __init__(self, mode: str = "plain"):
        super().__init__()
        self.mode = mode
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        if self.mode == "checkpoint" and self.training:
            return self.head(torch.utils.checkpoint.checkpoint(self.body, x, use_reentrant=False))
        if self.mode == "reentrant" and self.training:
            return self.head(torch.utils.checkpoint.checkpoint(self.body, x.requires_grad_(), use_reentrant=True))
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        if self.mode == "twice":  # e.g. a consistency term on a second view of the batch
            loss = loss + nn.functional.cross_entropy(self(x.flip(-1)), y)
        return loss

    def validation_step(self, batch, batch_idx):
        self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def fit_user_model(mode: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = TwoLayerUserModel(mode)
    x, y = torch.rand(40, 64) - 0.3, torch.randint(0, 10, (40,))
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[SparsityMonitor(modules=["body.1", "body.3"])],
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    trainer.fit(model, loader, loader)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("mode", ["checkpoint", "reentrant", "twice"])
def test_layers_are_the_same_in_every_stage_however_often_a_step_runs_them(mode):
    plain, result = fit_user_model("plain"), fit_user_model(mode)
    layers = {
        stage: {k.split("/", 2)[2] for k in result if k.startswith(f"{stage}/sparsity/")} for stage in ("train", "val")
    }
    assert layers["train"] == layers["val"] == {"body.1", "body.3", "mean"}
    if mode != "twice":  # a recomputation in backward is not counted again: the plain run's values exactly
        for key in ("train/sparsity/body.1", "train/dead/body.3", "train/dead/mean", "val/sparsity/mean"):
            assert result[key] == pytest.approx(plain[key], abs=1e-7), key


# -- several evaluation dataloaders --------------------------------------------------------------
class HandBuiltSeveralLoaders(HandBuilt):
    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self(batch[0])


def test_each_test_dataloader_is_counted_and_logged_on_its_own():
    all_zero = [(torch.zeros(2, 4), torch.zeros(2))]
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[SparsityMonitor()]
    )
    with pytest.warns(UserWarning, match=r"every unit of layer_[12]/dataloader_idx_1"):
        results = trainer.test(
            HandBuiltSeveralLoaders(), dataloaders=[Loader(batches()), Loader(all_zero)], verbose=False
        )
    for key, value in expected().items():
        assert results[0][f"{key}/dataloader_idx_0"] == pytest.approx(value), key
        assert results[1][f"{key}/dataloader_idx_1"] == pytest.approx(1.0), key  # all zeros, all dead
    assert not any(k in results[0] for k in expected())  # no pooled value under the plain names


# -- watched modules are checked before they run -------------------------------------------------
def test_a_watched_module_declared_to_return_a_list_is_refused_at_setup():
    ran = []

    class Steps(L.Callback):
        def on_train_batch_start(self, *args):
            ran.append(True)

    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor(modules=["encoder"]), Steps()],
    )
    with pytest.raises(ConfigError) as err:
        trainer.fit(SparseMLP(64, 10, [8, 4]), datamodule=DigitsDataModule())
    message = str(err.value)
    assert "\n" not in message and "'encoder' (Encoder) is declared to return a list" in message
    assert "encoder.layers.0.activation" in message  # what to watch instead
    assert not ran


class ReturnsPair(nn.Module):
    def forward(self, x):  # no annotation: only the first call can tell
        return torch.relu(x), x


class PairUser(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin, self.pair, self.list = nn.Linear(4, 3), ReturnsPair(), nn.ModuleList([nn.ReLU()])

    def test_step(self, batch, batch_idx):
        self.pair(self.lin(batch[0]))


def test_a_watched_module_that_returns_a_tuple_is_one_configuration_error_at_its_first_call():
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor(modules=["pair"])],
    )
    with pytest.raises(ConfigError, match=r"^SparsityMonitor: 'pair' \(ReturnsPair\) returned a tuple, not a tensor"):
        trainer.test(PairUser(), dataloaders=Loader(batches()), verbose=False)
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor(modules=["list"])],
    )
    with pytest.raises(ConfigError, match=r"'list' \(ModuleList\) is a container that is never called"):
        trainer.test(PairUser(), dataloaders=Loader(batches()), verbose=False)


def test_the_hint_lists_every_activation_the_last_hidden_one_included():
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, callbacks=[SparsityMonitor()])
    with pytest.raises(ConfigError, match=r"\['net.1', 'net.3'\]"):  # net.3 (Tanh) feeds the output layer
        trainer.fit(PlainUserModel(), datamodule=DigitsDataModule())


def test_activations_that_are_never_exactly_zero_are_named_in_a_note(caplog):
    class Smooth(PlainUserModel):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))

    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor(modules=["net.1", "net.3"])],
    )
    with caplog.at_level("INFO"):
        trainer.fit(Smooth(), datamodule=DigitsDataModule())
    [note] = [r.getMessage() for r in caplog.records if "almost never output exactly 0" in r.getMessage()]
    assert "net.1 (GELU)" in note and "net.3" not in note
    model = SparseMLP(64, 10, [8], activation="tanh")
    caplog.clear()
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[SparsityMonitor()]
    )
    with caplog.at_level("INFO"):
        trainer.test(model, dataloaders=Loader([(torch.rand(3, 64), torch.zeros(3).long())]), verbose=False)
    assert any("layer_1 (Tanh) almost never output exactly 0" in r.getMessage() for r in caplog.records)


# -- examples a distributed sampler repeats are not counted --------------------------------------
class Identity(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.act = Fixed()

    def sparsity_modules(self):
        return [self.act]

    def test_step(self, batch, batch_idx):
        self.act(batch[0])


def test_the_example_a_distributed_sampler_repeats_is_not_counted():
    from torch.utils.data import DistributedSampler

    from lightning_rect.data.batches import EpochShuffle, InMemoryBatches

    # 7 examples on 2 processes: process 1 gets examples 1, 3, 5 and a copy of example 0 (padding).
    # Unit 0 fires on example 0 alone, so on process 1 it is dead unless the copy is counted.
    x = torch.zeros(7, 2)
    x[0, 0] = 1.0
    x[:, 1] = 1.0
    dataset = TensorDataset(x, torch.zeros(7))
    for batch_size in (2, 4):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
        monitor = SparsityMonitor()
        L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor]).test(
            Identity(), DataLoader(dataset, batch_size=batch_size, sampler=sampler), verbose=False
        )
        assert monitor.firing_rate_histograms["test"]["layer_1"].dead == 1, batch_size  # unit 0
        assert monitor.firing_rates["test"]["layer_1"].tolist() == [0.0, 1.0]
    # The data modules' own sampler pads the same way (shuffled training order, seeded).
    sampler = EpochShuffle(7, shuffle=True, seed=0, rank=1, world_size=2)
    order = sampler.indices()
    first = EpochShuffle(7, shuffle=True, seed=0, rank=0, world_size=2).indices()
    assert sampler.padding == 1 and len(order) == 4 and order[-1] == first[0]  # a repeat of process 0's first
    monitor = SparsityMonitor()
    L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor]).test(
        Identity(),
        InMemoryBatches(torch.arange(7.0).view(7, 1).repeat(1, 2), torch.zeros(7), 3, sampler),
        verbose=False,
    )
    counted = monitor.firing_rates["test"]["layer_1"] * 3  # rows: the 3 real examples
    assert counted.tolist() == [float((order[:3] != 0).sum())] * 2


# -- several monitors on one Trainer: their own keys, their own file entries, their own state ----
class TwoBranches(L.LightningModule):
    """Two rectifiers on the same inputs, ``a`` and ``b``, whose thresholds change with the epoch so that
    the two rank the epochs differently (``a`` is sparsest in epoch 1, ``b`` in epoch 0). Every output
    of validation is kept, per epoch, to recount what a monitor must log."""

    A, B = (0.2, 0.8, 0.5), (0.9, 0.1, 0.6)

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.ReLU(), nn.ReLU()
        self.weight = nn.Parameter(torch.zeros(()))
        self.outputs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def forward(self, x):
        epoch = self.current_epoch
        return self.a(x - self.A[epoch]), self.b(x - self.B[epoch])

    def training_step(self, batch, batch_idx):
        self(batch[0])
        return (self.weight - 1) ** 2

    def validation_step(self, batch, batch_idx):
        self.outputs.setdefault(self.current_epoch, []).append(tuple(h.detach().clone() for h in self(batch[0])))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def recount(self, epoch: int, branch: int) -> tuple[float, float, torch.Tensor]:
        """(sparsity, dead fraction, non-zero outputs per unit) of one branch's validation outputs."""
        h = torch.cat([outputs[branch] for outputs in self.outputs[epoch]])
        nonzero = (h != 0).sum(0)
        return float((h == 0).double().mean()), float((nonzero == 0).double().mean()), nonzero


def branch_data() -> DataLoader:
    x = torch.rand(24, 8, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, torch.zeros(24)), batch_size=8)


class EpochValues(L.Callback):
    """``trainer.callback_metrics`` after each validation (the monitors have logged by then)."""

    def __init__(self):
        self.values: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module):
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_two_monitors_log_their_own_values_under_their_names_and_a_checkpoint_picks_by_one(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    model, values = TwoBranches(), EpochValues()
    alpha, beta = SparsityMonitor(modules=["a"], name="alpha"), SparsityMonitor(modules=["b"], name="beta")
    best = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/sparsity/alpha/mean", mode="max", save_top_k=1, filename="{epoch}"
    )
    trainer = L.Trainer(
        max_epochs=3,
        num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path, version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[alpha, beta, values, best],
    )
    trainer.fit(model, branch_data(), branch_data())
    for epoch, logged in enumerate(values.values):
        for name, module, branch in (("alpha", "a", 0), ("beta", "b", 1)):
            sparsity, dead, _ = model.recount(epoch, branch)
            for key in (f"val/sparsity/{name}/{module}", f"val/sparsity/{name}/mean"):
                assert logged[key] == pytest.approx(sparsity, abs=1e-6), (epoch, key)
            assert logged[f"val/dead/{name}/mean"] == pytest.approx(dead, abs=1e-6), (epoch, name)
        # neither monitor writes the plain names, which a lone monitor keeps
        assert not {"val/sparsity/mean", "val/dead/mean", "train/sparsity/mean"} & set(logged)
    alpha_by_epoch = [model.recount(epoch, 0)[0] for epoch in range(3)]
    best_epoch = alpha_by_epoch.index(max(alpha_by_epoch))
    averaged = [(model.recount(epoch, 0)[0] + model.recount(epoch, 1)[0]) / 2 for epoch in range(3)]
    assert averaged.index(max(averaged)) != best_epoch  # what one shared, averaged name would have picked
    assert float(best.best_model_score) == pytest.approx(max(alpha_by_epoch), abs=1e-6)
    assert best.best_model_path.endswith(f"epoch={best_epoch}.ckpt")
    # one firing_rates.json in the run folder holds both monitors' layers, each its own recount
    saved = json.loads((tmp_path / "lightning_logs" / "version_0" / RATES_FILE).read_text())["val"]
    assert saved["epoch"] == 2 and set(saved["layers"]) == {"alpha/a", "beta/b"}
    for layer, branch in (("alpha/a", 0), ("beta/b", 1)):
        assert saved["layers"][layer]["nonzero"] == model.recount(2, branch)[2].tolist(), layer
        assert saved["layers"][layer]["rows"] == 24
    assert set(alpha.firing_rates["val"]) == {"alpha/a"} and set(beta.firing_rates["val"]) == {"beta/b"}


def test_two_monitors_that_would_log_the_same_names_are_refused_at_setup_and_a_lone_monitor_keeps_its_names():
    ran = []

    class Steps(L.Callback):
        def on_train_batch_start(self, *args):
            ran.append(True)

    trainer = L.Trainer(
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor(modules=["a"]), SparsityMonitor(modules=["b"]), Steps()],
    )
    with pytest.raises(ConfigError) as err:
        trainer.fit(TwoBranches(), branch_data(), branch_data())
    message = str(err.value)
    assert "\n" not in message and "'val/sparsity/mean'" in message and "name=" in message
    assert not ran
    # two per-step monitors that share a layer would both log its train_step names
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            SparsityMonitor(modules=["a"], train_log_every_n_steps=1, epoch_logs=False),
            SparsityMonitor(modules=["b", "a"], train_log_every_n_steps=1, epoch_logs=False),
            Steps(),
        ],
    )
    with pytest.raises(ConfigError, match=r"would both log 'train_step/sparsity/a'.*name="):
        trainer.fit(TwoBranches(), branch_data())
    assert not ran
    # A per-epoch monitor and a per-step one (callbacks/sparsity_steps.yaml) share no name: both run,
    # and the per-epoch names are a lone monitor's.
    model = TwoBranches()
    trainer = L.Trainer(
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[
            SparsityMonitor(modules=["a"]),
            SparsityMonitor(modules=["a"], train_log_every_n_steps=1, epoch_logs=False),
        ],
    )
    trainer.fit(model, branch_data(), branch_data())
    logged = set(trainer.callback_metrics)
    assert {"val/sparsity/a", "val/sparsity/mean", "val/dead/mean", "train_step/sparsity/a"} <= logged
    assert trainer.callback_metrics["val/sparsity/mean"] == pytest.approx(model.recount(0, 0)[0], abs=1e-6)


def test_monitors_sharing_the_rates_file_each_replace_only_their_own_layers(tmp_path):
    path, nonzero = tmp_path / RATES_FILE, torch.tensor([1.0, 0.0])
    histogram = firing_rate_histogram(nonzero, 2)

    def save(layers, monitor, step):
        save_firing_rates(
            path,
            "val",
            {layer: histogram for layer in layers},
            {layer: (nonzero, 2.0) for layer in layers},
            epoch=0,
            global_step=step,
            monitor=monitor,
        )
        return sorted(json.loads(path.read_text())["val"]["layers"])

    assert save(["alpha/a"], "alpha", 10) == ["alpha/a"]
    assert save(["beta/b"], "beta", 10) == ["alpha/a", "beta/b"]  # the same evaluation: both monitors
    assert save(["layer_1"], "", 10) == ["alpha/a", "beta/b", "layer_1"]
    assert save(["alpha/c"], "alpha", 10) == ["alpha/c", "beta/b", "layer_1"]  # alpha's own layers replaced
    assert save(["beta/b"], "beta", 20) == ["beta/b"]  # a later evaluation: the older one's layers go


class FileStoreLogger(Logger):
    """Lightning's ``MLFlowLogger`` as the trainer sees it (mlflow itself need not be installed): its
    ``save_dir`` is the store's root, shared by every run (``None`` for a remote tracking server), its
    ``name`` the experiment id, its ``version`` the run id, and it has no ``log_dir``."""

    def __init__(self, root, run_id: str):
        super().__init__()
        self.root, self.run_id = root, run_id

    @property
    def save_dir(self):
        return None if self.root is None else str(self.root)

    @property
    def name(self):
        return "0"

    @property
    def version(self):
        return self.run_id

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_firing_rates_go_to_each_runs_own_folder_under_a_logger_without_log_dir(tmp_path):
    store = tmp_path / "mlruns"
    for run_id, shift in (("run1", 0), ("run2", 1)):
        trainer = L.Trainer(
            logger=FileStoreLogger(store, run_id),
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[SparsityMonitor()],
        )
        data = [(b[0] + shift, b[1]) for b in batches()]  # run2: every output non-zero
        trainer.test(HandBuilt(), dataloaders=Loader(data), verbose=False)
    assert not (store / RATES_FILE).exists()  # never the store's root, which every run shares
    first = json.loads((store / "0" / "run1" / RATES_FILE).read_text())["test"]["layers"]["layer_1"]
    second = json.loads((store / "0" / "run2" / RATES_FILE).read_text())["test"]["layers"]["layer_1"]
    assert first["nonzero"] == [0, 1, 4, 3] and second["nonzero"] == [4, 4, 4, 4]
    # no local store (a tracking server): beside the checkpoints, under the trainer's default_root_dir
    trainer = L.Trainer(
        logger=FileStoreLogger(None, "run3"),
        default_root_dir=tmp_path / "root",
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SparsityMonitor()],
    )
    trainer.test(HandBuilt(), dataloaders=Loader(batches()), verbose=False)
    saved = json.loads((tmp_path / "root" / "0" / "run3" / RATES_FILE).read_text())
    assert saved["test"]["layers"]["layer_1"]["nonzero"] == [0, 1, 4, 3]


# -- a model that is being monitored can be pickled and copied -----------------------------------
class MidFit(L.Callback):
    """Runs ``action(pl_module)`` after the first training batch, while the monitor's hooks count."""

    def __init__(self, action):
        self.action, self.results = action, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.results.append(self.action(pl_module))


class Trained(HandBuilt):
    def training_step(self, batch, batch_idx):
        self(batch[0])
        return (self.weight - 1) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit_hand_built(action):
    monitor, mid_fit = SparsityMonitor(), MidFit(action)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, mid_fit],
    )
    trainer.fit(Trained(), Loader(batches()))
    return trainer, monitor, mid_fit.results


def test_a_model_can_be_pickled_and_saved_mid_fit_and_its_copy_is_not_counted():
    import io
    import pickle

    def save(model):
        buffer = io.BytesIO()
        torch.save(model, buffer)
        return pickle.dumps(model), buffer.getvalue()

    trainer, monitor, [(pickled, saved)] = fit_hand_built(save)
    copies = [pickle.loads(pickled), torch.load(io.BytesIO(saved), weights_only=False)]
    expected_train = {k.replace("test/", "train/"): v for k, v in expected().items()}
    for copy in copies:
        copy(torch.ones(2, 4))  # a forward of the copy: nothing is counted, and nothing fails
    for key, value in expected_train.items():
        assert float(trainer.callback_metrics[key]) == pytest.approx(value), key


def test_a_deep_copy_made_mid_fit_does_not_feed_the_monitors_counts():
    import copy

    def copy_and_run(model):
        twin = copy.deepcopy(model)
        twin(torch.zeros(5, 4))  # all zeros: counted, it would move every value
        return twin

    trainer, monitor, _ = fit_hand_built(copy_and_run)
    x = torch.cat([b[0] for b in batches()])  # the training outputs the monitor saw
    assert torch.equal(monitor.firing_rates["train"]["layer_1"], (x != 0).float().mean(0))
    for key, value in expected().items():
        assert float(trainer.callback_metrics[key.replace("test/", "train/")]) == pytest.approx(value), key


def test_a_checkpoint_of_a_fit_with_two_monitors_restores_both(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(ckpt_path=None):
        monitors = [SparsityMonitor(modules=["a"], name="alpha"), SparsityMonitor(modules=["b"], name="beta")]
        checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="end")
        trainer = L.Trainer(
            max_epochs=2,
            num_sanity_val_steps=0,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[*monitors, checkpoint],
        )
        model = TwoBranches()
        trainer.fit(model, branch_data(), branch_data(), ckpt_path=ckpt_path)
        return model, monitors

    model, (alpha, beta) = fit()
    saved = torch.load(tmp_path / "end.ckpt", weights_only=True)["callbacks"]  # plain tensors and lists
    assert len([key for key in saved if key.startswith("SparsityMonitor")]) == 2
    _, restored = fit(ckpt_path=tmp_path / "end.ckpt")  # max_epochs reached: restores, trains no more
    for original, again, branch in ((alpha, restored[0], 0), (beta, restored[1], 1)):
        assert set(again.firing_rates) == {"train", "val"}
        nonzero = model.recount(1, branch)[2]
        [layer] = again.firing_rates["val"]
        assert torch.equal(again.firing_rates["val"][layer], nonzero.float() / 24)
        for stage in ("train", "val"):
            assert again.firing_rates[stage].keys() == original.firing_rates[stage].keys()
            for layer, rates in original.firing_rates[stage].items():
                assert torch.equal(again.firing_rates[stage][layer], rates), (stage, layer)
        assert again.firing_rate_histograms == original.firing_rate_histograms


class ForwardsOutsideSteps(L.Callback):
    """Runs the model on zeros (all-dead codes, were they counted) where no step runs: an export or a
    trace in a callback, a pass over the data between epochs."""

    def _forward(self, pl_module):
        with torch.no_grad():
            pl_module(torch.zeros(50, 64))

    def on_train_epoch_start(self, trainer, pl_module):
        self._forward(pl_module)

    def on_validation_end(self, trainer, pl_module):
        self._forward(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._forward(pl_module)


def test_forwards_outside_lightnings_steps_are_not_counted():
    def fit(extra):
        L.seed_everything(0)
        trainer = L.Trainer(
            max_epochs=2,
            limit_train_batches=5,
            limit_val_batches=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[SparsityMonitor(), *extra],
        )
        trainer.fit(SparseMLP(64, 10, [32, 16], lr=0.05), datamodule=DigitsDataModule(batch_size=16))
        return {k: float(v) for k, v in trainer.callback_metrics.items() if "/sparsity/" in k or "/dead/" in k}

    plain, disturbed = fit([]), fit([ForwardsOutsideSteps()])
    assert set(plain) >= {"train/sparsity/mean", "val/sparsity/mean", "val/dead/layer_2"}
    assert disturbed == pytest.approx(plain)


def test_under_fabric_the_monitor_says_it_is_a_trainer_callback_in_one_line():
    from lightning import Fabric

    from lightning_rect.callbacks.sparsity import UNDER_FABRIC

    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[SparsityMonitor()])
    with pytest.raises(ConfigError) as refused:
        fabric.call("setup", fabric, SparseMLP(64, 10, [8]), "fit")
    assert str(refused.value) == UNDER_FABRIC and "\n" not in UNDER_FABRIC
