"""Taking the networks out of Lightning: TorchScript, the legacy ONNX exporter, and a plain
``nn.Sequential`` with a pre-trained encoder's weights."""

import io
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from lightning_rect import Encoder, SparseMLP, StackedDAE


def encoder_with_scale_and_flip(**kwargs) -> Encoder:
    torch.manual_seed(0)
    encoder = Encoder(12, [8, 6], **kwargs)
    encoder.layers[0].output_scale = 2.5  # as a scaled_sigmoid pre-training leaves it
    return encoder


@pytest.mark.parametrize("kwargs", [{}, {"activation": "tanh", "sign_flip": True}])
def test_torch_jit_script_compiles_the_encoder_with_its_depth_and_size_check(kwargs):
    encoder = encoder_with_scale_and_flip(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's deprecation notice of TorchScript
        scripted = torch.jit.script(encoder)
    x = torch.rand(5, 12)
    for depth in (None, 1, -1):
        ours, theirs = scripted(x, depth), encoder(x, depth)
        assert len(ours) == len(theirs) == (1 if depth else 2)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert torch.equal(scripted(x.view(5, 3, 4))[-1], encoder(x)[-1])  # images are flattened per example
    with pytest.raises(Exception, match=r"in_features is 12; set in_features=7"):
        scripted(torch.rand(5, 7))


def test_lightnings_to_torchscript_scripts_a_trained_classifier_that_computes_what_it_does():
    """``to_torchscript()``'s default method is script: the classifier's forward compiles (the check
    that loads pre-trained weights on first use stays out of the scripted copy)."""
    torch.manual_seed(0)
    model = SparseMLP(64, 10, [16, 8]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's and Lightning's deprecation notices of TorchScript
        scripted = model.to_torchscript()
    x = torch.rand(5, 64)
    assert torch.equal(scripted(x), model(x))


def run_onnx(model: nn.Module, x: torch.Tensor) -> list:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"])
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return ReferenceEvaluator(proto).run(None, {"x": x.numpy()})


def test_legacy_onnx_export_of_the_classifier_and_the_encoder_computes_what_they_do():
    x = torch.rand(4, 12)
    encoder = encoder_with_scale_and_flip(sign_flip=True)
    outputs = run_onnx(encoder, x)
    assert len(outputs) == 2
    for ours, theirs in zip(outputs, encoder(x)):
        assert torch.allclose(torch.from_numpy(ours), theirs, atol=1e-6)

    model = SparseMLP(12, 3, [8, 6])
    model.encoder.layers[1].output_scale = 4.0
    model.eval()
    [log_probs] = run_onnx(model, x)
    assert torch.allclose(torch.from_numpy(log_probs), model(x), atol=1e-6)
    assert torch.equal(torch.export.export(model, (x,)).module()(x), model(x))  # still works too


def test_a_pretrained_encoder_becomes_a_plain_sequential_with_its_code(tmp_path):
    dae = StackedDAE(12, None, [8, 6], sign_flip=True)
    dae.encoder.layers[0].output_scale = 2.5
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")

    encoder = StackedDAE.load_encoder(str(tmp_path / "dae.ckpt"))
    sequential = encoder.to_sequential()
    assert type(sequential) is nn.Sequential
    assert [type(m).__name__ for m in sequential] == [
        "Linear",
        "Rectifier",
        "SignFlip",
        "OutputScale",
        "Linear",
        "Rectifier",
        "SignFlip",
    ]
    x = torch.rand(7, 12)
    assert torch.equal(sequential(x), encoder(x)[-1])
    assert torch.equal(sequential(x), dae(x))
    # only the Linear weights, under nn.Sequential's own keys; copies, not the encoder's tensors
    assert list(sequential.state_dict()) == ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert torch.equal(sequential[4].weight, encoder.layers[1].linear.weight)
    assert sequential[0].weight.data_ptr() != encoder.layers[0].linear.weight.data_ptr()


def test_the_sequential_of_an_encoder_without_flip_or_scale_loads_into_one_written_by_hand():
    encoder = Encoder(12, [8, 6])
    by_hand = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU())
    by_hand.load_state_dict(encoder.to_sequential().state_dict())  # strict: same keys, nothing extra
    x = torch.rand(3, 12)
    assert torch.allclose(by_hand(x), encoder(x)[-1])
