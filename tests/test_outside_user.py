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
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=3,
        limit_val_batches=1,
        enable_checkpointing=False,
        callbacks=[RecordLR()],
        **QUIET,
    )
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
    [result] = L.Trainer(callbacks=[monitor], **QUIET).test(
        cnn, DataLoader(TensorDataset(x, y), batch_size=32), verbose=False
    )
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
        model, DataLoader(TensorDataset(x, y), batch_size=50), verbose=False
    )
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
    [result] = L.Trainer(**QUIET).test(
        again, datamodule=DigitsDataModule(), ckpt_path=best.best_model_path, verbose=False
    )
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
    L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[FirstWeights()],
        **QUIET,
    ).fit(mlp, datamodule=DigitsDataModule())
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


# ---- a pre-trained model keeps what it holds --------------------------------------------------


def untrained_dae_checkpoint(tmp_path, hidden=(16,), num_classes=10):
    """A StackedDAE checkpoint written without training (its weights are its seeded initialisation)."""
    torch.manual_seed(1)
    dae = StackedDAE(64, num_classes, list(hidden), epochs_per_layer=1)
    trainer = L.Trainer(max_epochs=1, **QUIET)
    trainer.strategy.connect(dae)
    path = tmp_path / "dae.ckpt"
    trainer.save_checkpoint(path)
    return dae, path


def test_a_fine_tuned_model_fitted_again_keeps_its_weights_without_the_pretraining_file(tmp_path):
    dae, pretrained = untrained_dae_checkpoint(tmp_path)
    mlp = SparseMLP(64, 10, [16], lr=0.1, pretrained=str(pretrained))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False, **QUIET)
    trainer.fit(mlp, datamodule=DigitsDataModule())
    trainer.save_checkpoint(tmp_path / "fine.ckpt")
    pretrained.rename(tmp_path / "moved.ckpt")

    loaded = SparseMLP.load_from_checkpoint(tmp_path / "fine.ckpt")
    seen = {}

    class FirstWeights(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["weight"] = pl_module.encoder.layers[0].linear.weight.detach().clone()

    L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[FirstWeights()],
        **QUIET,
    ).fit(loaded, datamodule=DigitsDataModule())
    assert torch.equal(seen["weight"], mlp.encoder.layers[0].linear.weight)  # the fine-tuned weights, not the DAE's
    assert not torch.equal(seen["weight"], dae.encoder.layers[0].linear.weight)


def test_a_model_built_with_pretrained_evaluates_with_the_pretrained_encoder(tmp_path):
    dae, pretrained = untrained_dae_checkpoint(tmp_path)
    x, y = digits("test")
    for run in ("validate", "test"):
        mlp = SparseMLP(64, 10, [16], pretrained=str(pretrained))
        [result] = getattr(L.Trainer(**QUIET), run)(mlp, DataLoader(TensorDataset(x, y), batch_size=100), verbose=False)
        assert torch.equal(mlp.encoder.layers[0].linear.weight, dae.encoder.layers[0].linear.weight), run
        with torch.no_grad():  # the error of the pre-trained encoder with this model's output layer
            by_hand = (mlp.head(dae(x)).argmax(1) != y).float().mean().item()
        stage = "val" if run == "validate" else "test"
        assert result[f"{stage}/err"] == pytest.approx(by_hand), run

    from lightning_rect.errors import CheckpointError

    missing = SparseMLP(64, 10, [16], pretrained=str(tmp_path / "gone.ckpt"))
    with pytest.raises(CheckpointError, match=r"^pretrained checkpoint '.*gone.ckpt' does not exist; [^\n]*$"):
        L.Trainer(**QUIET).test(missing, DataLoader(TensorDataset(x, y), batch_size=100), verbose=False)


def test_a_pretraining_checkpoint_given_to_the_classifier_says_what_to_do(tmp_path):
    from lightning_rect.errors import LightningRectError

    for num_classes in (10, None):  # the CLI records the data's classes; a plain StackedDAE may have none
        _, path = untrained_dae_checkpoint(tmp_path, num_classes=num_classes)
        with pytest.raises(LightningRectError) as err:
            SparseMLP.load_from_checkpoint(path)
        assert "\n" not in str(err.value) and "pretrained=" in str(err.value), num_classes
        assert "StackedDAE.load_from_checkpoint" in str(err.value)


def test_a_pretrained_encoder_goes_into_ones_own_model(tmp_path):
    dae, path = untrained_dae_checkpoint(tmp_path, hidden=(16, 8))
    dae.encoder.layers[0].output_scale = 2.5
    trainer = L.Trainer(max_epochs=1, **QUIET)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(path)

    class MyClassifier(L.LightningModule):
        def __init__(self, pretrained):
            super().__init__()
            self.encoder = StackedDAE.load_encoder(pretrained)
            self.head = nn.Linear(self.encoder.hidden_sizes[-1], 10)

        def forward(self, x):
            return self.head(self.encoder(x)[-1])

    model = MyClassifier(str(path))
    x, _ = digits("test")
    assert model.encoder.hidden_sizes == [16, 8] and model.encoder.layers[0].output_scale == 2.5
    assert torch.equal(model.encoder(x)[-1], dae(x))


def test_a_dae_cut_short_by_max_steps_says_so_before_training():
    dae = StackedDAE(64, 10, [16, 8], epochs_per_layer=2)
    trainer = L.Trainer(max_steps=3, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False, **QUIET)
    with pytest.warns(
        UserWarning,
        match=r"max_steps=3 stops StackedDAE .*\(2 layers x 4 steps = 8 steps\): layer 1 "
        r"of 2 never finishes .* val/recon stays inf; set trainer.max_steps to 8",
    ):
        trainer.fit(dae, DataLoader(digits("train")[0][:20], batch_size=10))


# ---- several validation dataloaders, checkpointed activations, torchvision, compile -------------


class ValidatesTwoSets(SmallCNN):
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self(batch[0])


def test_two_validation_loaders_are_measured_on_their_own():
    torch.manual_seed(0)
    model = ValidatesTwoSets()
    x, y = digits("val")
    blank = torch.zeros_like(x)  # every first-layer output is relu(bias): 0 where a bias is <= 0
    loaders = [DataLoader(TensorDataset(x, y), batch_size=100), DataLoader(TensorDataset(blank, y), batch_size=100)]
    results = L.Trainer(callbacks=[SparsityMonitor(modules=["act1"])], **QUIET).validate(model, loaders, verbose=False)
    with torch.no_grad():
        by_hand = [
            (model.act1(model.conv1(inputs.view(-1, 1, 8, 8))) == 0).float().mean().item() for inputs in (x, blank)
        ]
    assert results[0]["val/sparsity/act1/dataloader_idx_0"] == pytest.approx(by_hand[0], abs=1e-6)
    assert results[1]["val/sparsity/act1/dataloader_idx_1"] == pytest.approx(by_hand[1], abs=1e-6)
    assert by_hand[0] != pytest.approx(by_hand[1])


def test_torchvision_resnet18_with_shared_inplace_relus_and_checkpointed_blocks():
    from torchvision.models import resnet18

    class ResNetModule(L.LightningModule):
        def __init__(self, checkpointed: bool):
            super().__init__()
            self.net, self.checkpointed = resnet18(weights=None, num_classes=10), checkpointed

        def forward(self, x):
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            for stage in (n.layer1, n.layer2, n.layer3, n.layer4):
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False) if self.checkpointed else stage(x)
            return n.fc(torch.flatten(n.avgpool(x), 1))

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))), batch_size=2)
    values = {}
    for checkpointed in (False, True):
        torch.manual_seed(0)
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=1,
            limit_val_batches=1,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            callbacks=[SparsityMonitor(modules=["ReLU"])],
            **QUIET,
        )
        trainer.fit(ResNetModule(checkpointed), data, data)
        values[checkpointed] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    layers = {
        stage: {k.split("/", 2)[2] for k in values[True] if k.startswith(f"{stage}/sparsity/")}
        for stage in ("train", "val")
    }
    # each block's one ReLU module runs twice (after conv1, after the sum), 2 blocks per stage, 4 stages
    assert (
        layers["train"]
        == layers["val"]
        == {"net.relu", "mean"} | {f"net.layer{s}.{b}.relu@{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)}
    )
    # Recomputed in backward, the blocks' outputs are not counted twice. (Validation differs: recomputing
    # updates the batch norms' running statistics a second time.)
    train = {k: v for k, v in values[False].items() if k.startswith("train/")}
    assert {k: v for k, v in values[True].items() if k.startswith("train/")} == pytest.approx(train, abs=1e-7)


class CompiledBody(L.LightningModule):
    """A user's module whose network is a compiled submodule (``self.body = torch.compile(...)``)."""

    def __init__(self, backend):
        super().__init__()
        self.body = torch.compile(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), backend=backend)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.body(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.body(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_compiled(build, watched: list[str] | None, logged: str, epochs: int = 2) -> None:
    """``epochs`` epochs of ``build(backend)`` with a compile counter: nothing compiles after the first
    steps (train, validation, train again), and the watched layer is logged under the user's name."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter, frames = CompileCounter(), []

    class Frames(L.Callback):
        def on_train_batch_end(self, *args):
            frames.append(counter.frame_count)

    x, y = digits("train")
    data = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=10)
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_val_batches=1,
        enable_checkpointing=False,
        callbacks=[SparsityMonitor(modules=watched), Frames()],
        **QUIET,
    )
    trainer.fit(build(counter), data, data)
    assert len(frames) == 4 * epochs and frames[0] > 0 and len(set(frames[2:])) == 1, frames
    assert f"val/sparsity/{logged}" in trainer.callback_metrics and f"train/dead/{logged}" in trainer.callback_metrics
    assert not [k for k in trainer.callback_metrics if "_orig_mod" in k]


def test_a_compiled_submodule_compiles_once_and_is_watched_under_its_own_name():
    fit_compiled(CompiledBody, ["body.1"], "body.1")


@pytest.mark.slow  # a few seconds each: dynamo traces Lightning's compiled steps
def test_compiled_models_compile_once():
    fit_compiled(lambda backend: torch.compile(SparseMLP(64, 10, [16, 8], lr=0.1), backend=backend), None, "layer_2")
    # one layer trained for 3 epochs: the step reads the layer, not the epoch counter
    fit_compiled(
        lambda backend: torch.compile(StackedDAE(64, 10, [16], epochs_per_layer=3), backend=backend),
        None,
        "layer_1",
        epochs=3,
    )


# ---- DivergenceGuard on a plain DataLoader ----------------------------------------------------


def test_nan_inputs_in_a_plain_dataloader_are_named_not_the_learning_rate():
    from lightning_rect.callbacks import DivergenceGuard
    from lightning_rect.errors import NonFiniteInputError

    x, y = digits("train")
    x, y = x[:50].clone(), y[:50]
    x[13, 5] = float("nan")  # in batch 1; the guard reads the loss at batch 3, past the bad batch
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[DivergenceGuard(check_every_n_steps=4)],
        **QUIET,
    )
    with pytest.raises(NonFiniteInputError) as err:
        trainer.fit(SparseMLP(64, 10, [16]), DataLoader(TensorDataset(x, y), batch_size=10))
    message = str(err.value)
    assert "training batch 1 of epoch 0 hold 1 NaN or infinite value" in message
    assert "the learning rate is not the cause" in message and "(the training dataloader)" in message

    val = x[:20].clone()
    val[3, 0] = float("inf")
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, enable_checkpointing=False, callbacks=[DivergenceGuard()], **QUIET
    )
    with pytest.raises(NonFiniteInputError) as err:
        trainer.fit(
            SparseMLP(64, 10, [16]),
            DataLoader(TensorDataset(x[20:], y[20:]), batch_size=10),
            DataLoader(TensorDataset(val, y[:20]), batch_size=10),
        )
    assert "(the validation dataloader)" in str(err.value) and "training data" not in str(err.value)
