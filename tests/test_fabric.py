"""SparseMLP outside the Trainer: in a Fabric loop (the hooks called as Fabric's guide calls them)
and in plain PyTorch. The pre-trained weights are used from the first forward or step, and the
epoch-end hooks log through Fabric without a Trainer's batch counts."""

import lightning as L
import pytest
import torch
from lightning.fabric.loggers import Logger

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.data import DigitsDataModule


class Recorder(Logger):
    """A Fabric logger that keeps what it is given."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, float] = {}

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def saved_dae(tmp_path) -> tuple[StackedDAE, str]:
    L.seed_everything(1)
    dae = StackedDAE(64, 10, [32, 16])
    dae.encoder.layers[0].output_scale = 2.0  # the fixed scale travels too
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(dae)
    path = tmp_path / "dae.ckpt"
    trainer.save_checkpoint(path)
    return dae, str(path)


def holds_encoder_of(model: SparseMLP, dae: StackedDAE) -> bool:
    ours, theirs = model.encoder.state_dict(), dae.encoder.state_dict()
    return all(torch.equal(ours[k], theirs[k]) for k in theirs)


def splits():
    dm = DigitsDataModule()
    dm.setup("fit")
    dm.setup("test")
    return dm.splits


def error_of(model: SparseMLP, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=-1) != y).float().mean().item()


def test_a_fabric_loop_fine_tunes_from_the_pretrained_weights_and_logs_each_dataloaders_error(tmp_path):
    dae, path = saved_dae(tmp_path)
    data = splits()
    recorder = Recorder()
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[recorder])
    model = SparseMLP(64, 10, [32, 16], lr=0.1, pretrained=path)
    optimizer = model.configure_optimizers()
    wrapped, optimizer = fabric.setup(model, optimizer)

    x, y = data["train"]
    loss = wrapped.training_step((x[:20], y[:20]), 0)
    assert holds_encoder_of(model, dae) and bool(model.pretrained_loaded)  # loaded before the step computed
    fabric.backward(loss)
    optimizer.step()
    assert not holds_encoder_of(model, dae)  # and trained from there
    assert model.encoder.layers[0].output_scale == 2.0

    wrapped.eval()
    wrapped.on_validation_epoch_start()
    for index, name in enumerate(["val", "test"]):  # two validation dataloaders
        vx, vy = data[name]
        for batch, start in enumerate(range(0, len(vy), 128)):
            wrapped.validation_step((vx[start : start + 128], vy[start : start + 128]), batch, dataloader_idx=index)
    wrapped.on_validation_epoch_end()

    assert set(recorder.metrics) == {
        "val/err/dataloader_idx_0",
        "val/loss/dataloader_idx_0",
        "val/err/dataloader_idx_1",
        "val/loss/dataloader_idx_1",
    }
    assert recorder.metrics["val/err/dataloader_idx_0"] == pytest.approx(error_of(model, *data["val"]), abs=1e-6)
    assert recorder.metrics["val/err/dataloader_idx_1"] == pytest.approx(error_of(model, *data["test"]), abs=1e-6)


def test_plain_pytorch_forward_uses_the_pretrained_weights_and_loaded_weights_are_not_replaced(tmp_path):
    dae, path = saved_dae(tmp_path)
    x = torch.rand(5, 64)
    model = SparseMLP(64, 10, [32, 16], pretrained=path)
    expected = torch.log_softmax(model.head(dae.encoder(x)[-1]), dim=-1)
    assert torch.allclose(model(x), expected)
    assert holds_encoder_of(model, dae)

    with torch.no_grad():  # "fine-tuned" weights, handed to a fresh model through its state_dict
        model.encoder.layers[0].linear.weight.add_(1.0)
    fresh = SparseMLP(64, 10, [32, 16], pretrained=path)
    fresh.load_state_dict(model.state_dict())
    (tmp_path / "dae.ckpt").unlink()  # never read again: the state says the weights hold it
    assert torch.allclose(fresh(x), model(x))


def test_the_epoch_end_hooks_without_trainer_or_fabric_name_what_to_call():
    data = splits()
    model = SparseMLP(64, 10, [16])
    model.on_validation_epoch_start()
    model.validation_step(data["val"], 0)
    expected = (
        r"SparseMLP.on_validation_epoch_end logs through a Trainer or Fabric .* call fabric.setup\(model\) "
        r"first, or .* model.evaluation_results\('val'\)"
    )
    with pytest.raises(RuntimeError, match=expected):
        model.on_validation_epoch_end()
    results = model.evaluation_results("val")
    assert set(results) == {"val/err", "val/loss"}
    assert results["val/err"].item() == pytest.approx(error_of(model, *data["val"]), abs=1e-6)
    assert model.evaluation_results("val") == {}  # reset
