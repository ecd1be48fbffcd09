from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_rect import SparseMLP
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.data import DigitsDataModule, MNISTDataModule
from lightning_rect.errors import ConfigError, DataFileError

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_l1_penalty_raises_the_loss_by_its_coefficient():
    torch.manual_seed(0)
    base = SparseMLP(8, 3, [5, 6], l1=0.0)
    penalised = SparseMLP(8, 3, [5, 6], l1=0.5)
    penalised.load_state_dict(base.state_dict())
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    loss0, _ = base.loss(x, y)
    loss1, _ = penalised.loss(x, y)
    hidden = base.encoder(x)
    expected = 0.5 * sum(h.abs().sum() for h in hidden) / (4 * 2)  # mean over examples and layers
    assert (loss1 - loss0).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("field,value", [("l1", -0.1), ("l1", float("nan")), ("lr", 0.0), ("momentum", -1.0)])
def test_bad_hyperparameters_are_refused_with_the_field_name(field, value):
    with pytest.raises(ConfigError, match=field):
        SparseMLP(8, 3, [5], **{field: value})


def test_missing_mnist_names_the_folder_and_the_fix(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataFileError) as err:
        dm.setup("fit")
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    assert "download" in str(err.value)


def test_image_batches_are_flattened_and_a_wrong_size_names_in_features():
    model = SparseMLP(64, 10, [16])
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    with pytest.raises(ConfigError, match=r"in_features is 784.*in_features=64"):
        SparseMLP()(torch.rand(5, 1, 8, 8))


def _fit_steps(batches: list[torch.Tensor], labels: list[torch.Tensor], **trainer_args) -> SparseMLP:
    torch.manual_seed(0)
    model = SparseMLP(64, 10, hidden_sizes=[32, 16], lr=0.1, momentum=0.5)
    x, y = torch.cat(batches), torch.cat(labels)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(batches[0]), shuffle=False)
    L.Trainer(max_epochs=1, limit_val_batches=0, **QUIET, **trainer_args).fit(model, loader)
    return model


def test_accumulated_batches_take_one_step_on_their_mean_gradient():
    # Lightning's automatic loop: two accumulated batches of 10 = one SGD step on the 20 examples.
    torch.manual_seed(1)
    x, y = torch.rand(20, 64), torch.randint(0, 10, (20,))
    accumulated = _fit_steps([x[:10], x[10:]], [y[:10], y[10:]], accumulate_grad_batches=2)
    whole = _fit_steps([x], [y])
    torch.manual_seed(0)  # as in _fit_steps: the starting weights
    initial = SparseMLP(64, 10, hidden_sizes=[32, 16])
    for (name, a), b, start in zip(accumulated.named_parameters(), whole.parameters(), initial.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
        assert not torch.equal(a, start), name  # it did take the step


def test_each_validation_dataloader_is_measured_and_logged_on_its_own():
    torch.manual_seed(0)
    model = SparseMLP(64, 10, [16])
    dm = DigitsDataModule()
    dm.setup("fit")
    x, y = dm.splits["val"]
    shifted = (y + 1) % 10  # other labels, other error
    loaders = [
        DataLoader(TensorDataset(x, y), batch_size=64),
        DataLoader(TensorDataset(torch.zeros_like(x), shifted), batch_size=64),
    ]
    with pytest.warns(UserWarning, match="every unit of layer_1/dataloader_idx_1 output exactly 0"):  # zero inputs
        results = L.Trainer(callbacks=[SparsityMonitor()], **QUIET).validate(model, loaders, verbose=False)
    with torch.no_grad():
        errors = [
            (model(inputs).argmax(1) != labels).float().mean().item()
            for inputs, labels in ((x, y), (torch.zeros_like(x), shifted))
        ]
        sparsity = [(model.encoder(inputs)[0] == 0).float().mean().item() for inputs in (x, torch.zeros_like(x))]
    for i in (0, 1):
        assert results[i][f"val/err/dataloader_idx_{i}"] == pytest.approx(errors[i]), i
        assert results[i][f"val/sparsity/layer_1/dataloader_idx_{i}"] == pytest.approx(sparsity[i], abs=1e-6), i
        assert "val/err" not in results[i] and "val/sparsity/mean" not in results[i]
    assert errors[0] != pytest.approx(errors[1])
    # one dataloader keeps the plain names
    [single] = L.Trainer(**QUIET).validate(model, loaders[0], verbose=False)
    assert single["val/err"] == pytest.approx(errors[0]) and not [k for k in single if "dataloader_idx" in k]


def test_the_papers_learning_rate_grid_is_defined_once():
    import re

    from conftest import ROOT

    from lightning_rect.callbacks import divergence
    from lightning_rect.grid import PAPER_LRS
    from lightning_rect.reproduce import budgets

    defined = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "lightning_rect").rglob("*.py"))
        if re.search(r"^\s*PAPER_LRS\s*[:=]", path.read_text(), re.MULTILINE)
    ]
    assert defined == ["lightning_rect/grid.py"]
    assert budgets.PAPER_LRS is divergence.PAPER_LRS is PAPER_LRS == (0.1, 0.01, 0.001, 0.0001)


def saved_dae(tmp_path, hidden=(32,)) -> str:
    from lightning_rect import StackedDAE

    L.seed_everything(3)
    dae = StackedDAE(64, 10, list(hidden))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    return str(tmp_path / "dae.ckpt")


def error_by_hand(state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """The error of a network holding ``state``, counted without Lightning or the pre-training file."""
    model = SparseMLP(64, 10, [32])
    model.load_state_dict(state)
    with torch.no_grad():
        return (model(x).argmax(dim=-1) != y).float().mean().item()


# ddp_spawn hands back weights whose pretrained_loaded flag comes with them, so a later test measures the
# fine-tuned net: the compatibility matrix's cell ddp_spawn x hand-off (tests/compat/cells.py, distributed).


def test_a_state_dict_says_whether_its_weights_hold_the_pretrained_encoder(tmp_path):
    path = saved_dae(tmp_path)
    trained = SparseMLP(64, 10, [32], pretrained=path)
    trained.load_pretrained()
    assert trained.state_dict()["pretrained_loaded"].item() is True
    assert SparseMLP(64, 10, [32], pretrained=path).state_dict()["pretrained_loaded"].item() is False

    older = {k: v for k, v in trained.state_dict().items() if k != "pretrained_loaded"}  # an older version's
    restored = SparseMLP(64, 10, [32], pretrained=path)
    restored.load_state_dict(older)
    assert bool(restored.pretrained_loaded)  # its weights were trained ones: the file is not read again

    # an older version's checkpoint held the flag as a top-level key (absent: a fit's, so True)
    trainer = L.Trainer(max_epochs=1, **QUIET)
    trainer.strategy.connect(SparseMLP(64, 10, [32], pretrained=path))
    trainer.save_checkpoint(tmp_path / "older.ckpt")
    checkpoint = torch.load(tmp_path / "older.ckpt", weights_only=True)
    del checkpoint["state_dict"]["pretrained_loaded"]
    for legacy, expected in ((False, False), (None, True)):
        if legacy is not None:
            checkpoint["pretrained_loaded"] = legacy
        torch.save(checkpoint, tmp_path / "older.ckpt")
        assert bool(SparseMLP.load_from_checkpoint(tmp_path / "older.ckpt").pretrained_loaded) is expected
        checkpoint.pop("pretrained_loaded", None)


def test_a_pytorch_lightning_trainer_refuses_the_models_and_the_readme_names_lightning_trainer():
    """pytorch_lightning checks isinstance(model, pytorch_lightning.LightningModule) before any of the
    model's code runs, so its generic error cannot be replaced: the README says which Trainer to use."""
    pl = pytest.importorskip("pytorch_lightning")
    with pytest.raises(TypeError, match=r"must be a `LightningModule`"):
        pl.Trainer(logger=False, enable_checkpointing=False).fit(SparseMLP(64, 10, [8]))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    reuse = readme.split("## Parts you can reuse")[1].split("\n## ")[0]
    assert "of the `lightning` package: run them with `lightning.Trainer`" in reuse
    assert "a `pytorch_lightning.Trainer` refuses them" in reuse


@pytest.mark.slow
def test_the_library_does_not_import_pytorch_lightning():
    import subprocess
    import sys

    code = (
        "import sys, lightning_rect, lightning_rect.callbacks, lightning_rect.models; "
        "print('pytorch_lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
