"""``StackedDAE(rescale=True)``: each layer's outputs divided by their maximum on the training inputs
once its epochs end; the layer's reconstruction is unchanged, and the scale travels to fine-tuning."""

import copy

import lightning as L
import pytest
import torch

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.data import DigitsDataModule


@pytest.fixture(scope="module")
def rescaled(tmp_path_factory) -> tuple[StackedDAE, DigitsDataModule, L.Trainer]:
    return fit_dae(tmp_path_factory.mktemp("rescale"), rescale=True)


def fit_dae(tmp_path, rescale: bool) -> tuple[StackedDAE, DigitsDataModule, L.Trainer]:
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=50)
    dae = StackedDAE(
        in_features=64, hidden_sizes=[24, 16], activation="rectifier", epochs_per_layer=1, lr=0.05, rescale=rescale
    )
    trainer = L.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(dae, datamodule=data)
    return dae, data, trainer


def train_inputs(data: DigitsDataModule) -> torch.Tensor:
    return torch.cat([x for x, _ in data.train_dataloader()])


def test_rescaled_layers_peak_at_one_on_the_training_inputs_and_reconstruct_as_before(rescaled):
    dae, data, _ = rescaled
    x = train_inputs(data)
    with torch.no_grad():
        codes = dae.encoder(x)
    scales = [layer.output_scale for layer in dae.encoder.layers]
    assert all(s > 1.5 for s in scales), scales  # rectifier codes after pre-training are far above 1
    for h in codes:
        assert h.abs().max().item() == pytest.approx(1.0, rel=1e-5)

    # the decoder absorbed the scale: undoing both leaves layer 1's reconstruction cost unchanged
    dae = copy.deepcopy(dae)
    with torch.no_grad():
        rescaled = dae.reconstruction_loss(x, 0, torch.Generator().manual_seed(3))[0]
        layer, decoder = dae.encoder.layers[0], dae.decoders[0]
        decoder.weight.div_(layer.output_scale)
        layer.output_scale = 1.0
        original = dae.reconstruction_loss(x, 0, torch.Generator().manual_seed(3))[0]
    assert rescaled.item() == pytest.approx(original.item(), rel=1e-5)


def test_the_scales_are_in_the_checkpoint_and_fine_tuning_starts_from_them(rescaled, tmp_path):
    dae, _, trainer = rescaled
    path = tmp_path / "dae.ckpt"
    trainer.save_checkpoint(path)
    mlp = SparseMLP(in_features=64, num_classes=10, hidden_sizes=[24, 16], activation="rectifier", pretrained=str(path))
    mlp.load_pretrained()
    assert [layer.output_scale for layer in mlp.encoder.layers] == [layer.output_scale for layer in dae.encoder.layers]
    x = torch.rand(5, 64)
    with torch.no_grad():
        assert torch.equal(mlp.encoder(x)[-1], dae.encoder(x)[-1])


def test_without_rescale_the_scales_stay_one(tmp_path):
    dae, _, _ = fit_dae(tmp_path, rescale=False)
    assert [layer.output_scale for layer in dae.encoder.layers] == [1.0, 1.0]
