"""``fused_sgd``: plain SGD applied in place inside backward (``lightning_rect.fused_sgd``).

It must train exactly as the default path does (within float rounding: one BLAS call computes
W - lr * delta^T h where the default rounds the gradient first), respect schedulers, resume
bit-identically, and be refused in one line wherever the update would differ from plain SGD's.
"""

import copy
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.data import DigitsDataModule
from lightning_rect.errors import ConfigError
from lightning_rect.fused_sgd import InPlaceSGD

QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
    limit_val_batches=0,
    accelerator="cpu",
    devices=1,
)
#: float32 rounding after a few hundred steps: the two paths differ by ~1e-7 (lr 0.1, digits)
ATOL = 2e-5


def mlp(fused: bool, cls=SparseMLP, **kwargs) -> SparseMLP:
    torch.manual_seed(0)
    return cls(64, 10, [32, 16], lr=0.1, fused_sgd=fused, **kwargs)


def dae(fused: bool, **kwargs) -> StackedDAE:
    torch.manual_seed(0)
    return StackedDAE(64, None, [32, 16], lr=0.01, epochs_per_layer=1, fused_sgd=fused, **kwargs)


def fit(model, ckpt_path=None, **trainer_args) -> L.Trainer:
    torch.manual_seed(0)
    trainer = L.Trainer(**{**QUIET, **trainer_args})
    trainer.fit(model, DigitsDataModule(batch_size=10), ckpt_path=ckpt_path)
    return trainer


def floats(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point() and v.dim() > 0}


def assert_close(a, b, atol=ATOL) -> None:
    sa, sb = floats(a), floats(b)
    worst = max((sa[k] - sb[k]).abs().max().item() for k in sa)
    assert worst < atol, worst


def fused_params(model) -> list[torch.nn.Parameter]:
    linears = [layer.linear for layer in model.encoder.layers]
    linears += [model.head] if isinstance(model, SparseMLP) else list(getattr(model, "decoders", []))
    return [p for linear in linears for p in linear.parameters()]


# ---- the same training as plain SGD -------------------------------------------------------------


def test_sparse_mlp_trains_as_plain_sgd_without_weight_gradients():
    plain, fast = mlp(False), mlp(True)
    start = floats(mlp(False))
    fit(plain, max_steps=200)
    fit(fast, max_steps=200)
    assert_close(plain, fast)
    moved = max((floats(fast)[k] - start[k]).abs().max().item() for k in start)
    assert moved > 100 * ATOL  # the weights did train
    assert all(p.grad is None for p in fused_params(fast))  # never materialised
    assert fast._fused is None and all(layer.fused_sgd is None for layer in fast.encoder.layers)  # unbound after fit


@pytest.mark.parametrize("tied", [False, True])
def test_stacked_dae_trains_as_plain_sgd_layer_by_layer_with_the_same_noise(tied):
    plain, fast = dae(False, tied_weights=tied), dae(True, tied_weights=tied)
    fit(plain, max_epochs=2, limit_train_batches=100)  # 100 steps per layer, 2 layers
    fit(fast, max_epochs=2, limit_train_batches=100)
    assert_close(plain, fast)
    assert torch.equal(plain._generator.get_state(), fast._generator.get_state())  # noise drawn alike
    # layer 2's weights trained; a tied decoder's share of the encoder weight went through the optimizer
    assert not torch.equal(
        fast.encoder.layers[1].linear.weight, dae(True, tied_weights=tied).encoder.layers[1].linear.weight
    )
    untouched = [p for p in fused_params(fast) if not tied or p.dim() == 1]
    assert all(p.grad is None for p in untouched)


@pytest.mark.parametrize("model", [mlp, dae])
def test_in_double_precision_the_fused_update_is_plain_sgd_to_rounding(model):
    """64-true is plain SGD too (no scaling): what ``reproduce``'s float64 probe relies on."""
    plain, fast = model(False), model(True)
    fit(plain, max_epochs=2, limit_train_batches=50, precision="64-true")
    fit(fast, max_epochs=2, limit_train_batches=50, precision="64-true")
    assert {p.dtype for p in fast.parameters()} == {torch.float64}
    assert_close(plain, fast, atol=1e-12)
    assert all(p.grad is None for p in fused_params(fast) if p.dim() == 1)  # the fused path ran


class ScheduledMLP(SparseMLP):
    """The model's own SGD with a per-step StepLR: lr 0.1, then 0.01 from step 15."""

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_a_scheduler_changes_the_fused_update_as_it_changes_the_plain_one():
    plain, fast, unscheduled = mlp(False, ScheduledMLP), mlp(True, ScheduledMLP), mlp(True)
    for model in (plain, fast, unscheduled):
        fit(model, max_steps=40)
    assert_close(plain, fast)
    sf, su = floats(fast), floats(unscheduled)
    assert max((sf[k] - su[k]).abs().max().item() for k in sf) > 100 * ATOL


def test_resuming_is_bit_identical_to_an_uninterrupted_fused_fit(tmp_path):
    straight = mlp(True)
    fit(straight, max_epochs=3, limit_train_batches=15)
    first = mlp(True)
    trainer = fit(first, max_epochs=1, limit_train_batches=15)
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = mlp(True)
    fit(resumed, ckpt_path=str(tmp_path / "epoch1.ckpt"), max_epochs=3, limit_train_batches=15)
    a, b = floats(straight), floats(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_pretraining_in_its_second_layer_is_bit_identical(tmp_path):
    # the uninterrupted fit's own end-of-layer-1 checkpoint (StackedDAE refuses max_epochs below its schedule)
    saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    straight = dae(True)
    fit(straight, max_epochs=2, limit_train_batches=15, enable_checkpointing=True, callbacks=[saver])
    resumed = dae(True)
    fit(resumed, ckpt_path=str(tmp_path / "epoch=0.ckpt"), max_epochs=2, limit_train_batches=15)
    a, b = floats(straight), floats(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- refused where the update would not be plain SGD's -----------------------------------------


class WeightDecayMLP(SparseMLP):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, weight_decay=1e-4)


class OwnOptimizerMLP(SparseMLP):
    def configure_optimizers(self):
        return torch.optim.RMSprop(self.parameters(), lr=0.1)


class HeadOnlyMLP(SparseMLP):
    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


class ManualMLP(SparseMLP):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False


@pytest.mark.parametrize(
    "cls,model_args,trainer_args,reason",
    [
        (WeightDecayMLP, {}, {}, "weight_decay=0.0001"),
        (OwnOptimizerMLP, {}, {}, "optimizer is RMSprop"),
        (HeadOnlyMLP, {}, {}, "encoder.layers.0.linear.weight is not in the optimizer"),
        (SparseMLP, {}, {"accumulate_grad_batches": 2}, "accumulate_grad_batches is 2"),
        (SparseMLP, {}, {"gradient_clip_val": 1.0}, "gradient_clip_val is 1.0"),
        (SparseMLP, {}, {"precision": "bf16-mixed"}, "precision is 'bf16-mixed'"),
        (ManualMLP, {}, {}, "manual optimization"),
    ],
)
def test_what_would_change_the_update_is_refused_in_one_line_at_the_start_of_fit(cls, model_args, trainer_args, reason):
    model = mlp(True, cls, **model_args)
    before = floats(model)
    with pytest.raises(ConfigError, match=reason) as err:
        fit(model, max_steps=2, **trainer_args)
    message = str(err.value)
    assert "\n" not in message and message.startswith("fused_sgd cannot run here") and "fused_sgd: false" in message
    assert all(torch.equal(v, floats(model)[k]) for k, v in before.items())  # refused before any step


@pytest.mark.parametrize(
    "setting,named", [({"momentum": 0.9}, "momentum=0.9"), ({"optimizer": "adam"}, "optimizer=adam")]
)
def test_the_models_own_optimizer_settings_that_change_the_update_are_refused_when_it_is_built(setting, named):
    with pytest.raises(ConfigError, match=named) as err:
        SparseMLP(64, 10, [8], fused_sgd=True, **setting)
    assert "\n" not in str(err.value) and str(err.value).endswith("or fused_sgd: false")
    SparseMLP(64, 10, [8], fused_sgd=False, **setting)  # without fused_sgd they are fine
    # a subclass with an optimizer of its own is judged by what it builds, at the start of fit
    assert OwnOptimizerMLP(64, 10, [8], fused_sgd=True, **setting).hparams["fused_sgd"]


def test_a_strategy_that_reduces_gradients_is_refused_for_both_models(monkeypatch):
    """DDP in this process (one device: no child processes; with devices=2 every spawned process
    refuses at its own start of fit, as Lightning runs no model hook before launching them)."""
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the launcher's MASTER_PORT etc. stay in this test
    try:
        for model in (mlp(True), dae(True)):
            with pytest.raises(ConfigError, match=r"strategy is DDPStrategy .*reduced across processes") as err:
                fit(model, max_steps=2, strategy="ddp")
            assert "\n" not in str(err.value)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ---- only inside a fit ---------------------------------------------------------------------------


def test_outside_a_trainer_a_fused_model_trains_plainly():
    model = mlp(True)
    loss, _ = model.loss(torch.rand(4, 64), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in fused_params(model))


class CopyInTraining(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.copy = copy.deepcopy(pl_module)


def test_a_copy_made_during_the_fit_is_not_bound_to_the_optimizer():
    copier = CopyInTraining()
    model = mlp(True)
    fit(model, max_steps=1, callbacks=[copier])
    assert copier.copy._fused is None and copier.copy.encoder.layers[0].fused_sgd is None
    assert copy.deepcopy(InPlaceSGD(None, torch.optim.SGD(model.parameters(), lr=0.1), [])) is None
