import functools
import math

import lightning as L
import pytest
import torch

from lightning_rect import NOISE, RECONSTRUCTIONS, SparseMLP, StackedDAE
from lightning_rect.data import DigitsDataModule
from lightning_rect.errors import CheckpointError, ConfigError

# ---- noise on values ------------------------------------------------------------------------


def test_masking_zeroes_a_fraction_and_does_not_rescale():
    x = torch.full((200, 100), 0.5)
    out = NOISE.build("masking", level=0.25)(x, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {0.0, 0.5}  # kept inputs keep their value
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)


@functools.lru_cache
def bag_of_words(reviews=500, vocab=2000, words=30, seed=0) -> torch.Tensor:
    """Binary bags of words: exactly ``words`` present (1) of ``vocab`` in each review (shared between
    tests: the noises never change their input)."""
    scores = torch.rand(reviews, vocab, generator=torch.Generator().manual_seed(seed))
    return torch.zeros(reviews, vocab).scatter_(1, scores.topk(words, dim=1).indices, 1.0)


def within_binomial(successes: int, trials: int, p: float, stds: float = 5.0) -> bool:
    return abs(successes - trials * p) <= stds * math.sqrt(trials * p * (1 - p)) + 1


@pytest.mark.parametrize("level,switch_on", [(0.25, 0.005), (0.5, 0.0), (0.0, 0.05), (0.1, 0.2)])
def test_salt_and_pepper_drops_present_and_switches_on_absent_words_at_their_own_rates(level, switch_on):
    x = bag_of_words()
    present = x == 1
    out = NOISE.build("salt_and_pepper", level=level, switch_on=switch_on)(x, torch.Generator().manual_seed(1))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    n_present, n_absent = int(present.sum()), int((~present).sum())
    assert n_present == 500 * 30
    dropped = int((out[present] == 0).sum())
    switched_on = int((out[~present] == 1).sum())
    assert within_binomial(dropped, n_present, level), dropped / n_present
    assert within_binomial(switched_on, n_absent, switch_on), switched_on / n_absent


def test_salt_and_pepper_on_text_keeps_the_review():
    """The text default: of ~30 present words ~7.5 go, and ~25 absent ones come on, not ~620."""
    x = bag_of_words(vocab=5000)
    out = NOISE.build("salt_and_pepper", level=0.25)(x, torch.Generator().manual_seed(2))
    on_per_review = ((out == 1) & (x == 0)).sum(1).float().mean().item()
    kept_per_review = ((out == 1) & (x == 1)).sum(1).float().mean().item()
    assert on_per_review == pytest.approx(4970 * 0.005, abs=1.0)
    assert kept_per_review == pytest.approx(30 * 0.75, abs=0.5)


def test_salt_and_pepper_default_switch_on_is_the_text_rate():
    noise = NOISE.build("salt_and_pepper", level=0.25)
    assert noise.switch_on == 0.005
    assert repr(noise) == "SaltAndPepper(level=0.25, switch_on=0.005)"


def test_salt_and_pepper_on_non_binary_inputs_treats_non_zero_as_present():
    values = torch.rand(300, 200, generator=torch.Generator().manual_seed(5)) + 0.1  # in [0.1, 1.1)
    x = torch.where(torch.rand(300, 200, generator=torch.Generator().manual_seed(6)) < 0.5, values, 0.0)
    present = x != 0
    out = NOISE.build("salt_and_pepper", level=0.3, switch_on=0.2)(x, torch.Generator().manual_seed(7))
    # a present input is kept as it was or set to 0; an absent one stays 0 or is set to 1
    assert ((out[present] == x[present]) | (out[present] == 0)).all()
    assert ((out[~present] == 0) | (out[~present] == 1)).all()
    assert within_binomial(int((out[present] == 0).sum()), int(present.sum()), 0.3)
    assert within_binomial(int((out[~present] == 1).sum()), int((~present).sum()), 0.2)
    assert torch.equal(x, torch.where(present, values, 0.0))  # the input is not modified in place


def test_salt_and_pepper_with_both_rates_zero_is_the_identity():
    x = bag_of_words(reviews=10)
    assert torch.equal(NOISE.build("salt_and_pepper", level=0.0, switch_on=0.0)(x, torch.Generator()), x)


@pytest.mark.parametrize("name", ["masking", "salt_and_pepper"])
def test_noise_is_reproducible_from_the_generator_seed(name):
    x = bag_of_words(reviews=50, vocab=200, words=20) * torch.rand(50, 200)
    noise = NOISE.build(name, level=0.5)
    a = noise(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, noise(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, noise(x, torch.Generator().manual_seed(4)))
    # successive batches from one generator: the same sequence from the same seed
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert all(torch.equal(noise(x, g1), noise(x, g2)) for _ in range(3))


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), float("inf"), None, "0.1", True])
@pytest.mark.parametrize("argument,setting", [("level", "noise_level"), ("switch_on", "switch_on")])
def test_salt_and_pepper_rate_outside_range_is_refused_naming_the_setting(argument, setting, value):
    with pytest.raises(ConfigError, match=rf"^{setting} must be in \[0, 1\), got "):
        NOISE.build("salt_and_pepper", **{argument: value})


def test_unknown_noise_argument_names_the_noise_and_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        NOISE.build("masking", level=0.25, switch_on=0.005)
    assert str(err.value) == "noise 'masking' does not accept argument switch_on; it accepts: level"
    with pytest.raises(ConfigError) as err:
        NOISE.build("salt_and_pepper", level=0.25, swich_on=0.005)
    assert str(err.value) == "noise 'salt_and_pepper' does not accept argument swich_on; it accepts: level, switch_on"


@pytest.mark.parametrize("level", [-0.1, 1.0, float("nan")])
def test_noise_level_outside_range_is_refused(level):
    with pytest.raises(ConfigError, match=r"noise_level must be in \[0, 1\)"):
        NOISE.build("masking", level=level)


# ---- reconstruction costs on values ---------------------------------------------------------

F_PRE = torch.tensor([[0.0, 1.0], [-1.0, 2.0]])
TARGET = torch.tensor([[0.5, 1.0], [0.0, 1.0]])


def squared_error(output):
    return ((output - TARGET) ** 2).sum().item() / 2


def cross_entropy(p):
    return -(TARGET * torch.log(p) + (1 - TARGET) * torch.log(1 - p)).sum().item() / 2


@pytest.mark.parametrize(
    "name,expected",
    [
        ("softplus", squared_error(torch.log1p(torch.exp(F_PRE)))),
        ("linear", squared_error(F_PRE)),
        ("rectifier", squared_error(F_PRE.clamp_min(0))),
        ("sigmoid", cross_entropy(torch.sigmoid(F_PRE))),
        ("scaled_sigmoid", cross_entropy(torch.sigmoid(F_PRE))),
    ],
)
def test_reconstruction_cost_by_hand(name, expected):
    assert RECONSTRUCTIONS.build(name).cost(F_PRE, TARGET).item() == pytest.approx(expected, rel=1e-5)


# ---- training --------------------------------------------------------------------------------


def pretrain(epochs_per_layer=3, hidden=(64, 32), **kwargs) -> tuple[StackedDAE, dict]:
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=20)
    model = StackedDAE(
        dm.input_size, dm.num_classes, list(hidden), epochs_per_layer=epochs_per_layer, **{"lr": 0.01, **kwargs}
    )
    history: dict[str, list[float]] = {}

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # runs after this epoch's validation
            for key, value in trainer.callback_metrics.items():
                if key.startswith("val/pretrain/") and key.endswith(f"layer_{pl_module.current_layer + 1}/recon"):
                    history.setdefault(key, []).append(float(value))

    trainer = L.Trainer(
        max_epochs=epochs_per_layer * len(hidden),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(model, datamodule=dm)
    return model, history


@pytest.mark.slow
@pytest.mark.parametrize(
    "reconstruction,noise,activation",
    [
        ("softplus", "masking", "rectifier"),
        ("linear", "masking", "rectifier"),
        ("rectifier", "masking", "rectifier"),
        ("sigmoid", "masking", "tanh"),
        ("scaled_sigmoid", "salt_and_pepper", "rectifier"),
    ],
)
def test_every_layers_validation_reconstruction_falls(reconstruction, noise, activation):
    _, history = pretrain(reconstruction=reconstruction, noise=noise, activation=activation, higher_noise="masking")
    assert sorted(history) == ["val/pretrain/layer_1/recon", "val/pretrain/layer_2/recon"]
    for key, values in history.items():
        assert len(values) == 3
        assert values[-1] < values[0], (key, values)


@pytest.mark.slow
def test_scaled_sigmoid_fixes_the_scale_of_the_lower_layer():
    model, _ = pretrain(reconstruction="scaled_sigmoid", hidden=(32, 16), epochs_per_layer=1)
    scale = model.encoder.layers[0].output_scale
    assert scale > 1.0  # the largest rectifier activation on the training set
    dm = DigitsDataModule()
    dm.setup()
    h = model.encoder(dm.splits["train"][0], depth=1)[-1]
    assert h.max().item() == pytest.approx(1.0, rel=1e-4)
    assert model.encoder.layers[1].output_scale == 1.0  # top layer feeds nothing


def test_lower_layers_stay_frozen_while_a_higher_one_trains():
    model = StackedDAE(64, 10, [16, 8], epochs_per_layer=1, lr=0.1)
    x = torch.rand(5, 64)
    cost, penalty = model.reconstruction_loss(x, 1, None)
    (cost + penalty).backward()
    assert model.encoder.layers[0].linear.weight.grad is None
    assert model.encoder.layers[1].linear.weight.grad is not None


def test_tied_decoder_uses_the_transposed_encoder_weight():
    model = StackedDAE(6, None, [4], tied_weights=True)
    h = torch.rand(3, 4)
    expected = h @ model.encoder.layers[0].linear.weight + model.decoder_biases[0]
    assert torch.allclose(model.decode(h, 0), expected)
    assert not hasattr(model, "decoders")


def test_too_few_max_epochs_for_the_schedule_names_both_numbers():
    dm = DigitsDataModule()
    model = StackedDAE(64, 10, [8, 8], epochs_per_layer=2)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match=r"max_epochs is 3 .* = 4; set trainer.max_epochs: 4"):
        trainer.fit(model, datamodule=dm)


# ---- hand-off to fine-tuning -----------------------------------------------------------------


def save_dae(tmp_path, hidden=(32, 16), activation="rectifier"):
    model = StackedDAE(64, 10, list(hidden), activation=activation, reconstruction="scaled_sigmoid")
    model.encoder.layers[0].output_scale = 3.5
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path / "dae.ckpt"
    trainer.save_checkpoint(path)
    return model, path


def test_sparse_mlp_starts_from_the_pretrained_weights(tmp_path):
    dae, path = save_dae(tmp_path)
    mlp = SparseMLP(64, 10, [32, 16], pretrained=str(path))
    mlp.load_pretrained()
    ours, theirs = mlp.encoder.state_dict(), dae.encoder.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        same = torch.equal(ours[key], theirs[key]) if torch.is_tensor(ours[key]) else ours[key] == theirs[key]
        assert same, key
    assert mlp.encoder.layers[0].output_scale == 3.5  # the fixed scale travels too
    fresh = SparseMLP(64, 10, [32, 16])
    assert not torch.equal(fresh.encoder.layers[0].linear.weight, mlp.encoder.layers[0].linear.weight)


def test_a_pretrained_file_whose_bytes_changed_is_refused_by_both_readers_in_one_line(tmp_path):
    """Bytes changed inside a tensor (a bad disk or copy) still load as finite floats; the archive's
    checksums tell, before anything is built from them."""
    import zipfile

    _, path = save_dae(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        weight = max(archive.infolist(), key=lambda info: info.file_size)
    inside = weight.header_offset + weight.compress_size - 100  # its data follows a header of ~100 bytes
    data[inside : inside + 8] = b"\x7f" * 8
    (tmp_path / "flipped.ckpt").write_bytes(bytes(data))
    for read in (StackedDAE.load_encoder, lambda p: SparseMLP(64, 10, [32, 16], pretrained=p).load_pretrained()):
        with pytest.raises(CheckpointError, match=r"flipped.ckpt' is damaged: its part .* fails its checksum") as err:
            read(str(tmp_path / "flipped.ckpt"))
        assert "\n" not in str(err.value)


def test_a_checkpoint_of_an_older_version_keeps_its_fixed_scale(tmp_path):
    """Older checkpoints saved a layer's extra state as {"output_scale": x}; it is a tensor now (exporters
    read every state_dict entry as one)."""
    dae, path = save_dae(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["state_dict"]["encoder.layers.0._extra_state"].item() == 3.5
    checkpoint["state_dict"] = {
        k: {"output_scale": v.item()} if k.endswith("_extra_state") else v for k, v in checkpoint["state_dict"].items()
    }
    torch.save(checkpoint, tmp_path / "older.ckpt")
    mlp = SparseMLP(64, 10, [32, 16], pretrained=str(tmp_path / "older.ckpt"))
    mlp.load_pretrained()
    assert mlp.encoder.layers[0].output_scale == 3.5 and mlp.encoder.layers[1].output_scale == 1.0
    assert StackedDAE.load_encoder(str(tmp_path / "older.ckpt")).layers[0].output_scale == 3.5


def test_pretrained_with_other_sizes_names_both_shapes(tmp_path):
    _, path = save_dae(tmp_path)
    with pytest.raises(CheckpointError, match=r"\[64, 32, 16\].*\[64, 32, 8\]"):
        SparseMLP(64, 10, [32, 8], pretrained=str(path)).load_pretrained()


def test_pretrained_with_other_activation_is_refused(tmp_path):
    _, path = save_dae(tmp_path)
    expected = r"activation differs: checkpoint '.*dae.ckpt' has 'rectifier', this model has 'tanh'"
    with pytest.raises(CheckpointError, match=expected):
        SparseMLP(64, 10, [32, 16], activation="tanh", pretrained=str(path)).load_pretrained()


@pytest.mark.slow
def test_finetuning_from_pretraining_learns_digits(tmp_path):
    dae, _ = pretrain(epochs_per_layer=2, hidden=(128,))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=10)
    mlp = SparseMLP(64, 10, [128], lr=0.1, pretrained=str(tmp_path / "dae.ckpt"))
    trainer = L.Trainer(
        max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(mlp, datamodule=dm)
    result = trainer.test(mlp, datamodule=dm, verbose=False)[0]
    assert result["test/err"] < 0.08
    assert math.isfinite(result["test/loss"])


def test_fine_tuning_from_a_dead_pretrained_layer_warns_with_the_fraction(tmp_path):
    dae = StackedDAE(64, 10, [16, 8], epochs_per_layer=1)
    with torch.no_grad():  # layer 2 can never fire: its pre-activations are negative for any input
        dae.encoder.layers[1].linear.weight.zero_()
        dae.encoder.layers[1].linear.bias.fill_(-1.0)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    mlp = SparseMLP(64, 10, [16, 8], pretrained=str(tmp_path / "dae.ckpt"))
    fit = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.warns(UserWarning, match=r"pre-trained layer_2 from .*dae.ckpt has 100.0% dead units") as caught:
        fit.fit(mlp, datamodule=DigitsDataModule())
    assert not [w for w in caught if "layer_1 from" in str(w.message)]  # the live layer is not named


def test_each_layers_dead_fraction_is_measured_at_the_end_of_its_own_epochs():
    L.seed_everything(0)
    dae = StackedDAE(64, 10, [16, 8], epochs_per_layer=1)
    seen = {}

    class AfterLayer1(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:  # layer 1 is frozen from here: its dead units are final
                dm.setup("fit")
                with torch.no_grad():
                    h = pl_module.encoder(dm.splits["train"][0], depth=1)[-1]
                seen["layer_1"] = (h == 0).all(dim=0).float().mean().item()

    dm = DigitsDataModule(batch_size=20)
    with torch.no_grad():  # make a quarter of layer 1 dead for sure
        dae.encoder.layers[0].linear.weight[:4].zero_()
        dae.encoder.layers[0].linear.bias[:4] = -1.0
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[AfterLayer1()],
    )
    trainer.fit(dae, datamodule=dm)
    results = dae.extra_results()
    assert set(results) == {"pretrain/layer_1/dead", "pretrain/layer_2/dead"}
    assert results["pretrain/layer_1/dead"] == pytest.approx(seen["layer_1"]) and seen["layer_1"] >= 0.25


def test_testing_an_earlier_best_checkpoint_keeps_every_layers_end_of_pretraining_numbers():
    """The best checkpoint can predate the top layer's last epoch; testing it right after fit must
    not drop the top layer's numbers, while a resume in a new process takes the checkpoint's."""
    dae = StackedDAE(64, 10, [16, 8], epochs_per_layer=1)
    dae.dead_after_pretraining = {"pretrain/layer_1/dead": 0.25}
    dae.recon_after_pretraining = {0: 3.0}
    saved: dict = {}
    dae.on_save_checkpoint(saved)  # saved while the top layer was still training
    dae.dead_after_pretraining["pretrain/layer_2/dead"] = 0.5
    dae.recon_after_pretraining[1] = 7.0

    dae.on_load_checkpoint(saved)  # trainer.test(ckpt_path="best") in the same process
    assert dae.extra_results() == {"pretrain/layer_1/dead": 0.25, "pretrain/layer_2/dead": 0.5}
    assert dae.recon_after_pretraining == {0: 3.0, 1: 7.0}

    resumed = StackedDAE(64, 10, [16, 8], epochs_per_layer=1)
    resumed.on_load_checkpoint(saved)
    assert resumed.extra_results() == {"pretrain/layer_1/dead": 0.25} and resumed.recon_after_pretraining == {0: 3.0}


# ---- the user's own data ---------------------------------------------------------------------


def breast_cancer_loader(standardize: bool) -> tuple[torch.utils.data.DataLoader, torch.Tensor]:
    datasets = pytest.importorskip("sklearn.datasets")
    x = torch.tensor(datasets.load_breast_cancer().data, dtype=torch.float32)
    if standardize:
        x = (x - x.mean(dim=0)) / x.std(dim=0)
    else:  # min-max scaled into [0, 1]
        x = (x - x.amin(dim=0)) / (x.amax(dim=0) - x.amin(dim=0))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64), x


def fit_warnings(reconstruction: str, standardize: bool, recwarn) -> list[str]:
    loader, _ = breast_cancer_loader(standardize)
    dae = StackedDAE(30, None, [16], reconstruction=reconstruction, epochs_per_layer=1)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(dae, train_dataloaders=loader)
    return [str(w.message) for w in recwarn if "StackedDAE: the training inputs" in str(w.message)]


@pytest.mark.parametrize(
    "reconstruction,beyond", [("softplus", "below 0"), ("rectifier", "below 0"), ("sigmoid", "below 0 and above 1")]
)
def test_standardized_inputs_the_reconstruction_cannot_output_are_named_with_their_range(
    reconstruction, beyond, recwarn
):
    _, x = breast_cancer_loader(standardize=True)
    [message] = fit_warnings(reconstruction, True, recwarn)
    low, high = x.min().item(), x.max().item()
    assert low < -1 and high > 1
    assert f"range over [{low:.4g}, {high:.4g}]" in message
    assert (
        f"reconstruction '{reconstruction}' outputs values in [0, {'1' if reconstruction == 'sigmoid' else 'inf'}]"
        in message
    )
    assert f"cannot reconstruct the inputs {beyond}" in message and "set reconstruction: linear" in message
    assert "\n" not in message


@pytest.mark.parametrize("reconstruction,standardize", [("linear", True), ("softplus", False), ("sigmoid", False)])
def test_inputs_the_reconstruction_can_output_are_not_warned_about(reconstruction, standardize, recwarn):
    assert fit_warnings(reconstruction, standardize, recwarn) == []


def fit_dae_in(precision: str, limits: dict, **dae_args) -> tuple[StackedDAE, L.Trainer]:
    """A 64-16-8 StackedDAE (one epoch a layer) fitted on digits under ``precision``, with the Trainer's
    batch ``limits``."""
    L.seed_everything(0)
    dae = StackedDAE(64, 10, [16, 8], epochs_per_layer=1, **dae_args)
    trainer = L.Trainer(
        max_epochs=2,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **limits,
    )
    trainer.fit(dae, datamodule=DigitsDataModule(batch_size=20))
    return dae, trainer


@pytest.mark.parametrize("rescale", [False, True])
def test_pretraining_in_double_precision_trains_every_layer_in_float64(rescale, tmp_path):
    """Under ``precision="64-true"`` the passes a StackedDAE makes outside the training steps (each
    layer's dead fraction, the rescaling maximum) read the float32 batches in the model's dtype."""
    dae, trainer = fit_dae_in("64-true", {"limit_val_batches": 2}, rescale=rescale)
    assert {p.dtype for p in dae.parameters()} == {torch.float64}
    results = dae.extra_results()
    assert set(results) == {"pretrain/layer_1/dead", "pretrain/layer_2/dead"}
    assert all(0.0 <= v <= 1.0 for v in results.values())
    assert math.isfinite(trainer.callback_metrics["val/recon"].item())
    # ...and its encoder comes back as it was saved, in float64, for a model of one's own
    trainer.save_checkpoint(tmp_path / "dae64.ckpt")
    encoder = StackedDAE.load_encoder(str(tmp_path / "dae64.ckpt"))
    theirs, ours = encoder.state_dict(), dae.encoder.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert {p.dtype for p in encoder.parameters()} == {torch.float64}


@pytest.mark.parametrize("precision,dtype", [("32-true", torch.float32), ("bf16-true", torch.bfloat16)])
def test_load_encoder_gives_the_dtype_the_weights_were_saved_in_whatever_the_default(precision, dtype, tmp_path):
    dae, trainer = fit_dae_in(precision, {"limit_train_batches": 2, "limit_val_batches": 1})
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # a process of one's own whose default is float64
    try:
        encoder = StackedDAE.load_encoder(str(tmp_path / "dae.ckpt"))
    finally:
        torch.set_default_dtype(default)
    assert {p.dtype for p in encoder.parameters()} == {dtype}
    theirs, ours = encoder.state_dict(), dae.encoder.state_dict()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours if k.endswith("weight"))
