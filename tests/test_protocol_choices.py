"""The protocol choices: one L1 definition for both phases, the sign flip's |h| targets, the DAE's
selection metric summed over layers, sharp_softplus's initialisation, and the reproduce plans that
measure the choices (table1, sharpness, protocol) with their report."""

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.data import DigitsDataModule
from lightning_rect.encoder import Encoder, l1_penalty
from lightning_rect.reproduce.budgets import BUDGETS, PAPER_LRS, PAPER_SHARPNESS
from lightning_rect.reproduce.command import budget_of
from lightning_rect.reproduce.command import main as reproduce_main
from lightning_rect.reproduce.experiments import EXPERIMENTS, Context
from lightning_rect.reproduce.experiments.protocol import markdown as protocol_markdown
from lightning_rect.reproduce.plan import Cell
from lightning_rect.reproduce.runner import Record

ROOT = Path(__file__).resolve().parents[1]
L1 = "model.init_args.l1"
LR = "model.init_args.lr"
FLIP = "model.init_args.sign_flip"


# -- 1. the L1 penalty ---------------------------------------------------------------------------------
def test_l1_penalty_by_hand():
    h1 = torch.tensor([[1.0, -2.0], [3.0, 0.0]])  # |h| summed per example: 3, 3 -> mean 3
    h2 = torch.tensor([[0.5], [-1.5]])  # 0.5, 1.5 -> mean 1
    assert l1_penalty([h1]).item() == pytest.approx(3.0)
    assert l1_penalty([h1, h2]).item() == pytest.approx((3.0 + 1.0) / 2)  # default: divided by 2 layers
    assert l1_penalty([h1, h2], num_layers=4).item() == pytest.approx((3.0 + 1.0) / 4)
    assert l1_penalty([h1], num_layers=3).item() == pytest.approx(3.0 / 3)
    assert l1_penalty([h2], num_layers=1).item() == pytest.approx(1.0)


# -- 2. the DAE's L1 term weighs as much per layer as fine-tuning's ---------------------------------------
def test_dae_layer_penalty_is_its_share_of_the_fine_tuning_penalty():
    torch.manual_seed(0)
    sizes = [16, 12, 8]
    dae = StackedDAE(64, None, sizes, noise_level=0.0, l1=0.001)
    mlp = SparseMLP(64, 10, sizes, l1=0.001)
    mlp.encoder.load_state_dict(dae.encoder.state_dict())
    x, y = torch.rand(7, 64), torch.randint(0, 10, (7,))
    with torch.no_grad():
        hidden = mlp.encoder(x)
        assert all((h != 0).any() for h in hidden)  # live layers: the check below is not 0 == 0
        penalties = [dae.reconstruction_loss(x, k, None)[1].item() for k in range(3)]
        for k, h in enumerate(hidden):
            assert penalties[k] == pytest.approx(h.abs().sum().item() / 7 / 3, rel=1e-5), k
        # the three pre-training terms add up to the fine-tuning penalty, and its loss carries l1 times it
        assert sum(penalties) == pytest.approx(l1_penalty(hidden).item(), rel=1e-5)
        loss, logits = mlp.loss(x, y)
        assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item() + 0.001 * sum(penalties), rel=1e-6)
        # training_step of the DAE adds l1 times its layer's term to the reconstruction cost
        cost, penalty = dae.reconstruction_loss(x, 0, None)
    assert penalty.item() == pytest.approx(penalties[0], rel=1e-6) and cost.item() > 0


# -- 3. the sign flip: layers 2 and up reconstruct |h| unless the reconstruction is linear ----------------
NONNEGATIVE = ["softplus", "rectifier", "sigmoid", "scaled_sigmoid"]


def flipped_dae(reconstruction: str, sign_flip: bool = True) -> tuple[StackedDAE, torch.Tensor]:
    torch.manual_seed(1)
    return StackedDAE(64, None, [16, 8], sign_flip=sign_flip, reconstruction=reconstruction), torch.rand(20, 64)


@pytest.mark.parametrize("reconstruction", [*NONNEGATIVE, "linear"])
def test_sign_flip_targets_of_the_layers_above_the_first(reconstruction):
    dae, x = flipped_dae(reconstruction)
    clean = dae.layer_inputs(x, 1)
    assert (clean < 0).any() and (clean > 0).any()  # the flip makes layer 1's outputs signed
    target = dae._target(clean, 1)
    if reconstruction == "linear":
        assert torch.equal(target, clean)
    elif reconstruction in ("sigmoid", "scaled_sigmoid"):
        assert torch.equal(target, clean.abs().clamp(max=1))
    else:
        assert torch.equal(target, clean.abs())
    assert torch.equal(dae._target(x, 0), x)  # layer 1 reconstructs the data themselves (in [0, 1])


@pytest.mark.parametrize("reconstruction", NONNEGATIVE)
def test_sign_flip_targets_by_hand(reconstruction):
    dae, _ = flipped_dae(reconstruction)
    clean = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 2.0]])
    cross_entropy = reconstruction in ("sigmoid", "scaled_sigmoid")
    expected = [1.0, 0.5, 0.0, 0.5, 1.0] if cross_entropy else [2.0, 0.5, 0.0, 0.5, 2.0]  # clamped to 1
    assert dae._target(clean, 1).tolist() == [expected]
    assert dae.reconstruction.nonnegative_outputs


def test_flipped_tanh_outputs_keep_their_sign_in_the_cross_entropy_target():
    dae = StackedDAE(in_features=6, hidden_sizes=[4, 4], activation="tanh", sign_flip=True, reconstruction="sigmoid")
    clean = torch.tensor([[-0.8, -0.2, 0.2, 0.8]])
    assert dae._target(clean, 1) == pytest.approx(torch.tensor([[0.1, 0.4, 0.6, 0.9]]))


def test_linear_reconstruction_keeps_the_sign_and_without_the_flip_nothing_changes():
    dae, _ = flipped_dae("linear")
    clean = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 2.0]])
    assert not dae.reconstruction.nonnegative_outputs
    assert dae._target(clean, 1).tolist() == clean.tolist()
    plain, x = flipped_dae("softplus", sign_flip=False)
    inputs = plain.layer_inputs(x, 1)
    assert (inputs >= 0).all() and torch.equal(plain._target(inputs, 1), inputs)
    assert plain._target(clean, 1).tolist() == clean.tolist()  # no abs without the flip


def test_sign_flip_trains_the_upper_layer_against_abs_h():
    """The cost the optimizer sees is the reconstruction of |h|, not of the signed h."""
    dae, x = flipped_dae("softplus")
    dae.noises = [lambda v, g: v, lambda v, g: v]  # no corruption: the cost can be recomputed by hand
    clean = dae.layer_inputs(x, 1)
    h = dae.encoder.layers[1](clean)
    f = dae.decode(h, 1)
    cost, _ = dae.reconstruction_loss(x, 1, None)
    by_hand = (F.softplus(f) - clean.abs()).pow(2).sum() / len(x)
    signed = (F.softplus(f) - clean).pow(2).sum() / len(x)
    assert cost.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert abs(cost.item() - signed.item()) > 1e-3


# -- 4. the DAE's selection metric ---------------------------------------------------------------------
def read_epochs(csv_path: Path) -> dict[int, dict[str, float]]:
    """metrics.csv as epoch -> every non-empty value logged in that epoch."""
    epochs: dict[int, dict[str, float]] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            values = epochs.setdefault(int(row["epoch"]), {})
            values.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")})
    return epochs


@pytest.fixture(scope="module")
def fitted_dae(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dae")
    L.seed_everything(0)
    model = StackedDAE(64, 10, [16, 8], epochs_per_layer=1, lr=0.01)
    logger = CSVLogger(str(tmp))
    trainer = L.Trainer(
        max_epochs=2,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=5,
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=20))
    return model, trainer, read_epochs(Path(logger.log_dir) / "metrics.csv"), tmp


def test_val_recon_is_infinite_then_the_sum_over_layers(fitted_dae):
    model, _, epochs, _ = fitted_dae
    assert sorted(epochs) == [0, 1]
    first, second = epochs[0], epochs[1]
    assert math.isinf(first["val/recon"]) and first["val/recon"] > 0  # layer 1 trains: no checkpoint to keep
    layer_1, layer_2 = first["val/pretrain/layer_1/recon"], second["val/pretrain/layer_2/recon"]
    assert "val/pretrain/layer_2/recon" not in first and "val/pretrain/layer_1/recon" not in second
    assert layer_1 > 0 and layer_2 > 0
    assert second["val/recon"] == pytest.approx(layer_2 + layer_1, rel=1e-5)
    assert second["val/recon"] != pytest.approx(layer_2, rel=1e-3)  # not the top layer alone
    assert model.recon_after_pretraining == pytest.approx({0: layer_1, 1: layer_2}, rel=1e-5)


def test_recon_after_pretraining_survives_a_checkpoint(fitted_dae):
    model, trainer, _, tmp = fitted_dae
    path = tmp / "dae.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert saved["recon_after_pretraining"] == model.recon_after_pretraining
    loaded = StackedDAE.load_from_checkpoint(path)
    assert loaded.recon_after_pretraining == model.recon_after_pretraining
    assert sorted(loaded.recon_after_pretraining) == [0, 1]
    # keys written as strings (a JSON round trip) come back as layer numbers
    fresh = StackedDAE(64, 10, [16, 8])
    fresh.on_load_checkpoint({"recon_after_pretraining": {"0": 1.5, "1": 2.5}})
    assert fresh.recon_after_pretraining == {0: 1.5, 1: 2.5}
    older = StackedDAE(64, 10, [16, 8])
    older.on_load_checkpoint({})  # an older checkpoint without it
    assert older.recon_after_pretraining == {}


def test_missing_lower_layer_counts_as_zero_and_lower_layers_are_infinite():
    """_log_eval by itself: a 3-layer DAE while its middle and top layers train."""

    class FakeTrainer:
        testing = sanity_checking = False
        current_epoch = 0

    model = StackedDAE(8, None, [4, 4, 4], epochs_per_layer=1)
    logged = {}
    model.log_dict = lambda values, **kwargs: logged.update({k: float(v) for k, v in values.items()})
    model._trainer = FakeTrainer()
    model.recon_after_pretraining[0] = 10.0
    for epoch, value in ((1, 2.0), (2, 5.0)):
        model._trainer.current_epoch = epoch
        model.eval_recon[epoch].update(torch.tensor(value))
        model._log_eval("val")
        if epoch == 1:  # the middle layer trains: nothing to select yet
            assert math.isinf(logged["val/recon"]) and logged["val/pretrain/layer_2/recon"] == 2.0
    assert logged["val/pretrain/layer_3/recon"] == 5.0
    assert logged["val/recon"] == pytest.approx(5.0 + 10.0 + 2.0)
    assert model.recon_after_pretraining == {0: 10.0, 1: 2.0, 2: 5.0}


# -- 5. initial weights of sharp_softplus and softplus ---------------------------------------------------
def initial_weights(activation: str, args: dict | None = None, seed: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    encoder = Encoder(784, [50, 50], activation, args)
    return [layer.linear.weight.detach().clone() for layer in encoder.layers]


@pytest.mark.parametrize("a", [1, 3, 6])
def test_sharp_softplus_starts_from_the_rectifiers_weights(a):
    rectifier = initial_weights("rectifier")
    sharp = initial_weights("sharp_softplus", {"a": a})
    assert all(torch.equal(s, r) for s, r in zip(sharp, rectifier))
    assert not torch.equal(initial_weights("rectifier", seed=4)[0], rectifier[0])  # the seed does matter


def test_softplus_keeps_twice_the_rectifiers_gain():
    rectifier, softplus = initial_weights("rectifier"), initial_weights("softplus")
    for s, r in zip(softplus, rectifier):
        assert torch.allclose(s, 2 * r, atol=1e-7)
        assert (s.std() / r.std()).item() == pytest.approx(2.0, rel=1e-5)
    # Glorot uniform, gain 1: std = sqrt(2 / (fan_in + fan_out))
    assert rectifier[0].std().item() == pytest.approx(math.sqrt(2 / (784 + 50)), rel=0.02)


# -- 6. the plans ----------------------------------------------------------------------------------------
def plan(name: str, budget=None, datasets=("mnist",)):
    return EXPERIMENTS[name].plan(Context(budget or BUDGETS["grid"], ROOT / "configs"), list(datasets))


def test_table1_grid_plan_l1_and_learning_rates():
    specs = plan("table1")
    pre = [s for s in specs if s.phase == "pretrain"]
    fine = [s for s in specs if s.phase == "finetune"]
    assert len(pre) == 12 and len(fine) == 24
    ctx = Context(BUDGETS["grid"], ROOT / "configs")
    for activation in ("rectifier", "tanh", "softplus"):
        mine = [s for s in specs if s.cell.activation == activation]
        assert all(s.settings["model.init_args.activation"] == activation for s in mine)
        for phase, count in (("pretrain", 4), ("finetune", 8)):
            runs = [s for s in mine if s.phase == phase]
            assert len(runs) == count
            assert {s.lr for s in runs} == set(PAPER_LRS) == {s.settings[LR] for s in runs}
            if activation == "rectifier":
                assert all(L1 not in s.settings for s in runs)  # the config's
                assert {ctx.config_value(s.config, "model.init_args.l1") for s in runs} == {0.001}
            else:
                assert all(s.settings[L1] == 0.0 for s in runs), (activation, phase)
        pre_ids = {s.id for s in mine if s.phase == "pretrain"}
        for s in mine:
            if s.phase == "finetune":
                assert set(s.needs) == (pre_ids if s.cell.pretrained else set())


def test_budget_of_sets_each_phases_learning_rates():
    budget = budget_of("grid", [0.1], [0.01])
    assert budget.lrs == (0.1,) and budget.pretrain_lrs == (0.01,)
    assert BUDGETS["grid"].lrs == PAPER_LRS  # the named budget itself is not changed
    specs = plan("table1", budget)
    pre = [s for s in specs if s.phase == "pretrain"]
    fine = [s for s in specs if s.phase == "finetune"]
    assert len(pre) == 3 and len(fine) == 6
    assert all(s.lr == 0.1 and s.settings[LR] == 0.1 for s in fine)
    assert all(s.lr == 0.01 and s.settings[LR] == 0.01 for s in pre)
    only_lrs = budget_of("grid", [0.1])  # pre-training follows --lrs unless told otherwise
    assert {s.lr for s in plan("table1", only_lrs)} == {0.1}


def test_sharpness_plan_cells():
    specs = plan("sharpness", datasets=("norb",))
    rectifier = {s.cell: s for s in specs if s.cell.activation == "rectifier"}
    assert {(c.a, c.l1) for c in rectifier} == {(math.inf, 0.0), (math.inf, None)}
    for cell in rectifier:
        runs = [s for s in specs if s.cell == cell]
        assert len(runs) == 4
        if cell.l1 == 0.0:
            assert all(s.settings[L1] == 0.0 for s in runs)
        else:
            assert all(L1 not in s.settings for s in runs)  # Table 1's rectifier, the config's L1
    sharp = [s for s in specs if s.cell.activation == "sharp_softplus"]
    assert {s.cell.a for s in sharp} == {a for a in PAPER_SHARPNESS if math.isfinite(a)} == {1.0, 1.3, 2.0, 3.0, 6.0}
    for s in sharp:
        assert s.settings[L1] == 0.0
        assert s.settings["model.init_args.activation_args"] == {"a": s.cell.a}
    assert len(specs) == 4 * (5 + 2)


def test_protocol_plan_cells_and_needs():
    specs = plan("protocol")
    for activation in ("tanh", "softplus"):
        runs = [s for s in specs if s.cell.activation == activation]
        assert {s.cell.l1 for s in runs} == {0.0, 0.001}
        assert all(s.settings[L1] == s.cell.l1 and s.phase == "finetune" and not s.needs for s in runs)
        assert len(runs) == 2 * 4
    rectifier = [s for s in specs if s.cell.activation == "rectifier"]
    fine = [s for s in rectifier if s.phase == "finetune"]
    assert {(s.cell.pretrained, s.cell.sign_flip) for s in fine} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }
    pre = [s for s in rectifier if s.phase == "pretrain"]
    flip_pre = {s.id for s in pre if s.settings.get(FLIP) is True}
    plain_pre = {s.id for s in pre if FLIP not in s.settings}
    assert len(flip_pre) == 4 and len(plain_pre) == 4 and len(pre) == 8
    assert all(s.cell.sign_flip == (s.id in flip_pre) for s in pre)
    for s in fine:
        assert (s.settings.get(FLIP) is True) == s.cell.sign_flip
        assert L1 not in s.settings  # the rectifier keeps its config's L1
        if not s.cell.pretrained:
            assert s.needs == ()
        elif s.cell.sign_flip:
            assert set(s.needs) == flip_pre
        else:
            assert set(s.needs) == plain_pre
    assert len(specs) == 16 + 8 + 16
    assert len({s.id for s in specs}) == len(specs)


@pytest.mark.parametrize(
    "args,option",
    [(["--lrs", "0"], "--lrs"), (["--lrs", "0.1", "-1"], "--lrs"), (["--pretrain-lrs", "0"], "--pretrain-lrs")],
)
def test_non_positive_learning_rates_are_a_one_line_error(args, option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_main(
            ["table1", *args, "--budget", "tiny", "--datasets", "digits", "--dry-run", "--out", str(tmp_path / "out")]
        )
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option} must be positive numbers"), captured.err
    assert not (tmp_path / "out").exists() and captured.out == ""


# -- 7. the protocol report ------------------------------------------------------------------------------
def test_protocol_markdown_has_one_row_per_cell_with_its_numbers():
    specs = plan("protocol", budget_of("grid", [0.1, 0.01], [0.01]), datasets=("digits",))
    finetune_cells = list(dict.fromkeys(s.cell for s in specs if s.phase == "finetune"))
    assert len(finetune_cells) == 8
    records, expected = {}, {}
    for i, cell in enumerate(finetune_cells):
        err, sparse = 0.01 * (i + 1), 0.1 * (i + 1)
        winner = 0.1 if i % 2 else 0.01  # which learning rate wins on validation alternates
        for s in (s for s in specs if s.cell == cell):
            best = s.lr == winner
            results = {
                "best_val": 0.2 if best else 0.3,
                "test/err": err if best else 0.9,
                "test/sparsity/mean": sparse if best else 0.0,
            }
            records[s.id] = Record(s, status="done", results=results)
        expected[cell] = (f"{100 * err:.2f}%", f"{100 * sparse:.1f}%", f"{winner:g}")
    for s in specs:
        if s.phase == "pretrain":
            records[s.id] = Record(s, status="done", results={"best_val": 1.0, "test/recon": 1.0})
    pending = Cell("digits", "softplus", l1=0.001)  # one cell without a finished run
    for s in specs:
        if s.cell == pending:
            records[s.id] = Record(s, status="pending")
    lines = protocol_markdown(records, ["digits"])
    assert lines[0] == "### digits (8x8)"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| network")]
    assert len(rows) == 8

    labels = {
        Cell("digits", "tanh", l1=0.0): ("tanh, without pre-training", "no L1 (our default)"),
        Cell("digits", "tanh", l1=0.001): ("tanh, without pre-training", "L1 0.001 (the rectifier's)"),
        Cell("digits", "softplus", l1=0.0): ("softplus, without pre-training", "no L1 (our default)"),
        pending: ("softplus, without pre-training", "L1 0.001 (the rectifier's)"),
        Cell("digits", "rectifier"): ("rectifier, without pre-training", "sign flip off (our default)"),
        Cell("digits", "rectifier", sign_flip=True): ("rectifier, without pre-training", "sign flip on"),
        Cell("digits", "rectifier", pretrained=True): ("rectifier, with pre-training", "sign flip off (our default)"),
        Cell("digits", "rectifier", pretrained=True, sign_flip=True): (
            "rectifier, with pre-training",
            "sign flip on (the DAE reconstructs abs(h))",
        ),
    }
    assert set(labels) == set(finetune_cells)
    for cell, (label, setting) in labels.items():
        matching = [r for r in rows if r.startswith(f"| {label} | {setting} |")]
        assert len(matching) == 1, (cell, rows)
        if cell == pending:
            assert matching[0] == f"| {label} | {setting} | — (pending) | — (pending) | — |"
        else:
            err, sparse, lr = expected[cell]
            assert matching[0] == f"| {label} | {setting} | {err} | {sparse} | {lr} |"
