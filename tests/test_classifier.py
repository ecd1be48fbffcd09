import inspect

import lightning as L
import pytest
import torch

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.data import DigitsDataModule, MNISTDataModule
from lightning_rect.errors import ConfigError, DataFileError


def fit_digits(**model_args):
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=10)
    model = SparseMLP(dm.input_size, dm.num_classes, **{"hidden_sizes": [128], "lr": 0.1, **model_args})
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return trainer.test(model, datamodule=dm, verbose=False)[0]


def test_classifier_learns_digits_with_sparse_rectifiers():
    result = fit_digits(activation="rectifier", l1=0.001)
    assert result["test/err"] < 0.08
    assert result["test/sparsity"] > 0.3  # exact zeros are really produced


def test_tanh_has_no_exact_zeros():
    result = fit_digits(activation="tanh", l1=0.0)
    assert result["test/err"] < 0.1
    assert result["test/sparsity"] < 0.01


def test_l1_penalty_raises_the_loss_by_its_coefficient():
    torch.manual_seed(0)
    base = SparseMLP(8, 3, [5, 6], l1=0.0)
    penalised = SparseMLP(8, 3, [5, 6], l1=0.5)
    penalised.load_state_dict(base.state_dict())
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    loss0, _, hidden = base._loss(x, y)
    loss1, _, _ = penalised._loss(x, y)
    expected = 0.5 * sum(h.abs().sum() for h in hidden) / (4 * 2)  # mean over examples and layers
    assert (loss1 - loss0).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("field,value", [("l1", -0.1), ("l1", float("nan")), ("lr", 0.0)])
def test_bad_hyperparameters_are_refused_with_the_field_name(field, value):
    with pytest.raises(ConfigError, match=field):
        SparseMLP(8, 3, [5], **{field: value})


def test_missing_mnist_names_the_folder_and_the_fix(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataFileError) as err:
        dm.setup("fit")
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    assert "download" in str(err.value)


def _train_steps(automatic: bool | None, steps: int = 6, **trainer_args):
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=10)
    model = SparseMLP(dm.input_size, dm.num_classes, hidden_sizes=[32, 16], lr=0.1, momentum=0.5)
    if automatic is not None:
        model.automatic_optimization = automatic
    model.initial_head = model.head.weight.detach().clone()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, **trainer_args)
    trainer.fit(model, datamodule=dm)
    return model, trainer


def test_own_optimizer_step_matches_lightnings_automatic_loop():
    manual, manual_trainer = _train_steps(None)
    auto, auto_trainer = _train_steps(True)
    assert manual.automatic_optimization is False and auto.automatic_optimization is True
    assert manual_trainer.global_step == auto_trainer.global_step == 6
    for (name, p_manual), p_auto in zip(manual.named_parameters(), auto.parameters()):
        assert torch.allclose(p_manual, p_auto, atol=1e-6), name
    assert not torch.allclose(manual.head.weight, manual.initial_head)  # it did train


def test_gradient_clipping_switches_to_the_automatic_loop():
    model, trainer = _train_steps(None, steps=3, gradient_clip_val=1e-4)
    assert model.automatic_optimization is True
    assert trainer.global_step == 3


def test_compiled_loss_trains_like_the_eager_one():
    from lightning_rect.callbacks import SparsityMonitor

    results = []
    for compile in (False, True):
        L.seed_everything(0)
        model = SparseMLP(64, 10, hidden_sizes=[32, 16], lr=0.1, compile=compile)
        monitor = SparsityMonitor()
        trainer = L.Trainer(max_epochs=1, limit_train_batches=20, limit_val_batches=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[monitor])
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=10))
        results.append((model, dict(trainer.callback_metrics)))
    (eager, eager_metrics), (compiled, compiled_metrics) = results
    for p_eager, p_compiled in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(p_eager, p_compiled, atol=1e-5)
    # the monitor's hooks still count under torch.compile
    assert compiled_metrics["val/sparsity/mean"] == pytest.approx(eager_metrics["val/sparsity/mean"].item(), abs=1e-4)
    assert 0 < compiled_metrics["val/sparsity/mean"] < 1


@pytest.mark.parametrize("model", [SparseMLP(20, 3, [8]), StackedDAE(20, [8])], ids=["SparseMLP", "StackedDAE"])
def test_training_step_signature_is_precomputed_and_still_takes_batch_idx(model):
    from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

    assert isinstance(type(model).training_step.__signature__, inspect.Signature)
    assert inspect.getfullargspec(model.training_step).args == ["self", "batch", "batch_idx"]
    # what Lightning's training loop asks at every batch
    assert is_param_in_hook_signature(model.training_step, "batch_idx", min_args=2)
