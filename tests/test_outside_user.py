"""The reusable parts as another project meets them: public imports only, the user's own modules,
plain ``Trainer`` calls, schedulers, bare-tensor batches, an installed plugin that is broken."""

import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.data import DigitsDataModule

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)


def digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    dm = DigitsDataModule()
    dm.setup("fit")
    return dm.splits[split]


# ---- schedulers -------------------------------------------------------------------------------


class StepDecayMLP(SparseMLP):
    """A user's subclass that adds a learning-rate schedule, as in any LightningModule."""

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.1)}


def test_a_step_lr_schedule_changes_the_learning_rate_every_epoch():
    seen = []

    class RecordLR(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    model = StepDecayMLP(64, 10, [16], lr=0.1)
    trainer = L.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=1, enable_checkpointing=False,
                        callbacks=[RecordLR()], **QUIET)
    trainer.fit(model, datamodule=DigitsDataModule())
    assert seen == pytest.approx([0.1, 0.01, 0.001])


# ---- SparsityMonitor on the user's own modules ------------------------------------------------


class SmallCNN(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 16, 3, padding=1), nn.ReLU()
        self.conv2, self.act2 = nn.Conv2d(16, 8, 3, padding=1), nn.ReLU()
        self.out = nn.Linear(8 * 8 * 8, 10)

    def features(self, x):
        return self.act2(self.conv2(self.act1(self.conv1(x.view(-1, 1, 8, 8)))))

    def forward(self, x):
        return self.out(self.features(x).flatten(1))

    def test_step(self, batch, batch_idx):
        self(batch[0])


def test_cnn_units_are_channels_and_a_dead_channel_is_counted():
    torch.manual_seed(0)
    cnn = SmallCNN()
    with torch.no_grad():  # channel 3 of the first layer can never fire
        cnn.conv1.weight[3].zero_()
        cnn.conv1.bias[3] = -1.0
    x, y = digits("test")
    monitor = SparsityMonitor(modules=["act1", "act2"])
    [result] = L.Trainer(callbacks=[monitor], **QUIET).test(cnn, DataLoader(TensorDataset(x, y), batch_size=32),
                                                            verbose=False)
    with torch.no_grad():
        h1 = cnn.act1(cnn.conv1(x.view(-1, 1, 8, 8)))
    dead_by_hand = (h1 == 0).all(dim=0).all(dim=-1).all(dim=-1).float().mean().item()  # channels 0 everywhere
    assert dead_by_hand >= 1 / 16
    assert result["test/dead/act1"] == pytest.approx(dead_by_hand)
    assert result["test/sparsity/act1"] == pytest.approx((h1 == 0).float().mean().item(), abs=1e-6)
    assert monitor.firing_rates["test"]["act1"].shape == (16,)  # one rate per channel


class SharedActivation(L.LightningModule):
    """One ReLU module applied after two layers of different widths: a very common pattern."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head, self.act = nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 10), nn.ReLU()

    def forward(self, x):
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))

    def test_step(self, batch, batch_idx):
        self(batch[0])


def test_a_shared_activation_is_counted_per_call_site():
    torch.manual_seed(0)
    model = SharedActivation()
    x, y = digits("test")
    [result] = L.Trainer(callbacks=[SparsityMonitor(modules=["act"])], **QUIET).test(
        model, DataLoader(TensorDataset(x, y), batch_size=50), verbose=False)
    with torch.no_grad():
        h1 = model.act(model.fc1(x))
        h2 = model.act(model.fc2(h1))
    assert result["test/sparsity/act@1"] == pytest.approx((h1 == 0).float().mean().item(), abs=1e-6)
    assert result["test/sparsity/act@2"] == pytest.approx((h2 == 0).float().mean().item(), abs=1e-6)
    assert result["test/dead/act@2"] == pytest.approx((h2 == 0).all(0).float().mean().item())


# ---- checkpoints stand on their own -----------------------------------------------------------


def test_a_fine_tuned_checkpoint_loads_and_tests_after_the_pretraining_file_is_gone(tmp_path):
    L.seed_everything(0)
    dae = StackedDAE(64, 10, [32, 16], epochs_per_layer=1)
    pretrain = L.Trainer(max_epochs=2, default_root_dir=tmp_path / "pre", **QUIET)
    pretrain.fit(dae, datamodule=DigitsDataModule())
    pretrained = tmp_path / "dae.ckpt"
    pretrain.save_checkpoint(pretrained)

    mlp = SparseMLP(64, 10, [32, 16], lr=0.05, pretrained=str(pretrained))
    best = ModelCheckpoint(dirpath=tmp_path / "fine", monitor="val/err")
    trainer = L.Trainer(max_epochs=1, callbacks=[best], **QUIET)
    trainer.fit(mlp, datamodule=DigitsDataModule())
    pretrained.unlink()

    loaded = SparseMLP.load_from_checkpoint(best.best_model_path)
    for a, b in zip(loaded.parameters(), mlp.parameters()):
        assert torch.equal(a, b)
    # as `test --ckpt_path` does: a model built from the config (pretrained= still set), then the checkpoint
    again = SparseMLP(64, 10, [32, 16], pretrained=str(pretrained))
    [result] = L.Trainer(**QUIET).test(again, datamodule=DigitsDataModule(), ckpt_path=best.best_model_path,
                                       verbose=False)
    [expected] = L.Trainer(**QUIET).test(loaded, datamodule=DigitsDataModule(), verbose=False)
    assert result == expected


def test_fine_tuning_starts_from_the_pretrained_encoder(tmp_path):
    dae = StackedDAE(64, 10, [16], epochs_per_layer=1)
    trainer = L.Trainer(max_epochs=1, **QUIET)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    seen = {}

    class FirstWeights(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["weight"] = pl_module.encoder.layers[0].linear.weight.detach().clone()

    mlp = SparseMLP(64, 10, [16], pretrained=str(tmp_path / "dae.ckpt"))
    L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, enable_checkpointing=False,
              callbacks=[FirstWeights()], **QUIET).fit(mlp, datamodule=DigitsDataModule())
    assert torch.equal(seen["weight"], dae.encoder.layers[0].linear.weight)


# ---- StackedDAE under a plain Trainer, on bare tensors ----------------------------------------


def test_stacked_dae_stops_after_its_layers_on_bare_tensor_batches_and_predicts_codes():
    L.seed_everything(0)
    x, _ = digits("train")
    dae = StackedDAE(64, hidden_sizes=[32, 16], epochs_per_layer=2, lr=0.05)
    batch_sizes = []

    class PerBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            batch_sizes.append(batch.shape[0])

    trainer = L.Trainer(max_epochs=100, enable_checkpointing=False, callbacks=[PerBatch()], **QUIET)
    trainer.fit(dae, DataLoader(x, batch_size=20))  # batches are tensors, no labels
    assert trainer.current_epoch == 4  # 2 layers x 2 epochs, then it stopped by itself
    assert set(batch_sizes) == {20, len(x) % 20} - {0}  # whole batches, not one example of each
    codes = trainer.predict(dae, DataLoader(x[:50], batch_size=20))
    assert [c.shape for c in codes] == [(20, 16), (20, 16), (10, 16)]
    assert torch.allclose(torch.cat(codes), dae(x[:50]))


def test_predict_on_bare_tensors_gives_one_class_per_example():
    x, _ = digits("test")
    predictions = L.Trainer(**QUIET).predict(SparseMLP(64, 10, [16]), DataLoader(x[:25], batch_size=10))
    assert [p.shape for p in predictions] == [(10,), (10,), (5,)]


def test_a_model_of_the_wrong_input_size_says_which_setting(tmp_path):
    trainer = L.Trainer(max_epochs=1, **QUIET)
    with pytest.raises(ValueError, match=r"64 features per example .* in_features is 784; set in_features=64"):
        trainer.fit(SparseMLP(), datamodule=DigitsDataModule())


# ---- plugins ----------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter: the registry loads entry points once
def test_an_installed_plugin_that_fails_to_import_leaves_the_built_ins_working(tmp_path):
    # A real installed distribution (dist-info on sys.path) whose entry point names a missing module.
    dist = tmp_path / "site" / "broken_acts-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-acts\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lightning_rect.activations]\nswish = broken_acts_missing:Swish\n")
    script = textwrap.dedent("""
        import torch
        from lightning_rect import SparseMLP
        model = SparseMLP(4, 2, [3], activation="rectifier")
        print("rectifier ok", tuple(model(torch.rand(2, 4)).shape))
        try:
            SparseMLP(4, 2, [3], activation="swish")
        except ValueError as err:
            print("swish:", err)
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rectifier ok (2, 2)" in proc.stdout
    assert "swish = broken_acts_missing:Swish" in proc.stdout and "broken_acts_missing" in proc.stdout
    assert proc.stderr.count("swish = broken_acts_missing:Swish") == 1  # one warning
