"""The checks of the compatibility matrix (``matrix.py``): ``CHECKS["<row>__<column>"]`` runs one cell.

A check runs the contract as a user would, from the installed package, and asserts values: what was
logged (through the logger of the row, or ``trainer.callback_metrics``) equals a recount from the
weights the run returned, on the same examples; the batches of each epoch; the update a step made.
It returns a small dict of what it compared, raises ``AssertionError`` when a value differs, and
lets the library's one-line refusal (``LightningRectError``, the CLI's ``error: ...`` line, the
error of a spawned process) through as ``Refusal``: the runner reports that as ``refused: <line>``.

Tiny on purpose: the bundled digits (1,197 / 300 / 300 examples) in batches of 50 (evaluation: 100),
one hidden layer of 16 units, one or two epochs of 4 batches.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import io
import json
import math
import os
import pickle
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.loggers import Logger as FabricLogger
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from lightning_rect import SparseMLP, StackedDAE
from lightning_rect.callbacks import SparsityMonitor
from lightning_rect.data import DigitsDataModule
from lightning_rect.errors import LightningRectError
from lightning_rect.models.dae import EVAL_NOISE_SEED

HIDDEN = [16]
BATCH, EVAL_BATCH = 50, 100
LR = 0.1
CLIP = 0.05
QUIET = dict(enable_progress_bar=False, enable_model_summary=False)
#: Where shared files (the DAE checkpoint, the configs, the CLI's base run) go: set by the runner.
SHARED = Path(os.environ.get("COMPAT_SHARED", ".")).resolve()

CHECKS: dict[str, Callable[[], dict]] = {}


class Refusal(Exception):
    """A one-line refusal that reached the check by another way than a ``LightningRectError``: the CLI's
    ``error: ...`` line and exit code 2, or a spawned process's error."""


def rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


# ---- data and recounts ----------------------------------------------------------------------------


def datamodule() -> DigitsDataModule:
    return DigitsDataModule(batch_size=BATCH, eval_batch_size=EVAL_BATCH)


@functools.cache
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    dm = DigitsDataModule()
    dm.setup("fit")
    return dm.splits


def examples(stage: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = splits()[stage]
    return (x, y) if n is None else (x[:n], y[:n])


def eval_batches(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The evaluation batches the data module serves, in order (one process)."""
    for start in range(0, len(x), EVAL_BATCH):
        yield x[start : start + EVAL_BATCH]


@contextlib.contextmanager
def captured(modules: list[nn.Module]) -> Iterator[list[list[torch.Tensor]]]:
    """The outputs of ``modules`` during the block, every call, per module."""
    outputs: list[list[torch.Tensor]] = [[] for _ in modules]
    handles = [
        m.register_forward_hook(lambda mod, args, out, k=k: outputs[k].append(out.detach().float()))
        for k, m in enumerate(modules)
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def activity(stage: str, layers: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    """What SparsityMonitor logs, counted by hand: exact zeros and dead units of each layer's outputs."""
    values, sparsities, deads = {}, [], []
    for name, h in layers.items():
        zero = h == 0
        sparsities.append(zero.float().mean().item())
        deads.append(zero.all(dim=0).float().mean().item())
        values[f"{stage}/sparsity/{prefix}{name}"], values[f"{stage}/dead/{prefix}{name}"] = sparsities[-1], deads[-1]
    values[f"{stage}/sparsity/{prefix}mean"] = sum(sparsities) / len(sparsities)
    values[f"{stage}/dead/{prefix}mean"] = sum(deads) / len(deads)
    return values


def floats(metrics: dict, prefix: str = "") -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and "/" in k}


def assert_values(logged: dict, expected: dict[str, float], what: str = "logged") -> dict[str, float]:
    """Every expected value is there and equal (float32 sums: 1e-5 relative)."""
    logged = {k: float(logged[k]) for k in expected if logged.get(k) is not None}
    wrong = {
        k: (logged.get(k), v)
        for k, v in expected.items()
        if k not in logged or not math.isclose(logged[k], v, rel_tol=1e-5, abs_tol=1e-6)
    }
    assert not wrong, f"{what} != recount (logged, recount): {wrong}"
    return {k: round(v, 6) for k, v in expected.items()}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


# ---- the parts (columns) ----------------------------------------------------------------------------


class UserNet(L.LightningModule):
    """The user's own model, not this package's: a plain ``nn.Sequential`` MLP, watched by name."""

    def __init__(self, lr: float = LR) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self(batch[0])

    def test_step(self, batch, batch_idx):
        self(batch[0])

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(dim=-1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class FirstWeights(L.Callback):
    """Whether the encoder held the pre-trained weights (of ``reference``) at the first batch of the first
    stage run; also left in ``trainer.callback_metrics`` at the end of fit (ddp_spawn sends those back)."""

    KEY = "compat/pretrained_at_start"

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.matched: bool | None = None

    def _first(self, trainer, pl_module, *args) -> None:
        if self.matched is None:
            dae = StackedDAE.load_encoder(self.reference)
            self.matched = all(
                torch.equal(ours.linear.weight, theirs.linear.weight)
                and torch.equal(ours.linear.bias, theirs.linear.bias)
                for ours, theirs in zip(pl_module.encoder.layers, dae.layers)
            )

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _first

    def on_fit_end(self, trainer, pl_module) -> None:
        trainer.callback_metrics[self.KEY] = torch.tensor(float(bool(self.matched)))


class Record(L.Callback):
    """What a run did, for the checks: the labels of each training batch per epoch, validation runs (and
    the metrics after each), the first optimizer step's update, whether deterministic algorithms were on,
    the checkpoints kept. ``Record.instances`` holds those made in this process (the CLI makes its own)."""

    instances: ClassVar[list[Record]] = []

    def __init__(self) -> None:
        Record.instances.append(self)
        self.train_batches: dict[int, list[list[int]]] = {}
        self.sanity_runs = self.val_runs = 0
        self.val_metrics: list[dict[str, float]] = []
        self.test_metrics: dict[str, float] | None = None
        self.before: list[torch.Tensor] | None = None
        self.first_update: float | None = None
        self.lr: float | None = None
        self.deterministic: bool | None = None
        self.global_step = self.epochs = None
        self.checkpoints: dict[str, tuple[str, float | None]] = {}
        self.model = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.model = pl_module
        self.deterministic = torch.are_deterministic_algorithms_enabled()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train_batches.setdefault(trainer.current_epoch, []).append(batch[1].tolist())
        if self.before is None and trainer.global_step == 0:
            self.before = [p.detach().clone() for p in pl_module.parameters()]
            self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self.first_update is None and trainer.global_step == 1:
            self.first_update = math.sqrt(
                sum(((p.detach() - b) ** 2).sum().item() for p, b in zip(pl_module.parameters(), self.before))
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            self.sanity_runs += 1
        else:
            self.val_runs += 1
            self.val_metrics.append(floats(trainer.callback_metrics, "val/"))

    def on_test_end(self, trainer, pl_module) -> None:
        self.model = pl_module
        self.test_metrics = floats(trainer.callback_metrics, "test/")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.global_step, self.epochs = trainer.global_step, trainer.current_epoch
        self.checkpoints = {
            cb.monitor: (cb.best_model_path, None if cb.best_model_score is None else float(cb.best_model_score))
            for cb in trainer.checkpoint_callbacks
        }


class Part:
    """One column: how to build the model, which callbacks watch it, and the recount of what it logs."""

    id = ""
    metric, mode = "val/sparsity/mean", "max"  #: what ModelCheckpoint and EarlyStopping watch

    def build(self, epochs: int = 1) -> L.LightningModule:
        raise NotImplementedError

    def monitors(self, **kwargs) -> list[SparsityMonitor]:
        return [SparsityMonitor(**kwargs)]

    def callbacks(self) -> list[L.Callback]:
        return self.monitors()

    def load(self, path: str) -> L.LightningModule:
        raise NotImplementedError

    def recount(self, model, stage: str, n: int | None = None, autocast: bool = False) -> dict[str, float]:
        raise NotImplementedError

    def outputs(self, model, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    def predictions(self, model, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(dim=-1)

    def check(self, logged: dict, model, stage: str, n: int | None = None, autocast: bool = False) -> dict:
        return assert_values(logged, self.recount(model, stage, n, autocast))

    def started_right(self, callbacks: list) -> None:
        """The part's own condition on how a run started (the hand-off: from the pre-trained weights)."""


class MLPPart(Part):
    id = "mlp"
    metric, mode = "val/err", "min"

    def build(self, epochs: int = 1) -> SparseMLP:
        return SparseMLP(64, 10, HIDDEN, lr=LR)

    def load(self, path: str) -> SparseMLP:
        return SparseMLP.load_from_checkpoint(path, map_location="cpu")

    def recount(self, model, stage, n=None, autocast=False):
        x, y = examples(stage, n)
        model.eval()
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
            captured(model.sparsity_modules()) as outputs,
        ):
            logits = torch.cat([model(xb) for xb in eval_batches(x)])
        values = {f"{stage}/err": (logits.argmax(dim=-1) != y).float().mean().item()}
        values.update(activity(stage, {f"layer_{k}": torch.cat(h) for k, h in enumerate(outputs, start=1)}))
        return values


class HandoffPart(MLPPart):
    id = "handoff"

    def build(self, epochs: int = 1) -> SparseMLP:
        return SparseMLP(64, 10, HIDDEN, lr=LR, pretrained=dae_checkpoint())

    def callbacks(self) -> list[L.Callback]:
        return [*self.monitors(), FirstWeights(dae_checkpoint())]

    def started_right(self, callbacks: list) -> None:
        [first] = [cb for cb in callbacks if isinstance(cb, FirstWeights)]
        assert first.matched, "the first batch did not see the pre-trained encoder"


class DAEPart(Part):
    id = "dae"
    metric, mode = "val/recon", "min"

    def __init__(self, hidden: list[int] | None = None) -> None:
        self.hidden = hidden or HIDDEN

    def build(self, epochs: int = 1) -> StackedDAE:
        # one layer trained for `epochs` epochs: the schedule ends with the fit
        return StackedDAE(64, 10, self.hidden, lr=LR, epochs_per_layer=epochs)

    def load(self, path: str) -> StackedDAE:
        return StackedDAE.load_from_checkpoint(path, map_location="cpu")

    def predictions(self, model, x):
        with torch.no_grad():
            return model(x)

    def recount(self, model, stage, n=None, autocast=False, layers=None):
        """Reconstruction errors with the evaluation's fixed corruption, batch by batch and layer by layer
        as the steps draw it: validation evaluates the top layer (a finished schedule), test every layer."""
        x, _ = examples(stage, n)
        layers = list(
            layers if layers is not None else [model.num_layers - 1] if stage == "val" else range(model.num_layers)
        )
        generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        totals = dict.fromkeys(layers, 0.0)
        model.eval()
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
            captured(model.sparsity_modules()) as outputs,
        ):
            for xb in eval_batches(x):
                for layer in layers:
                    cost, _ = model.reconstruction_loss(xb, layer, generator)
                    totals[layer] += cost.item() * len(xb)
        return self._values(stage, totals, len(x), outputs)

    def recount_per_process(self, model, stage: str, world: int = 2) -> dict[str, float]:
        """The same, as ``world`` processes count it: each its strided share of the examples, corrupted by a
        generator seeded anew in each process (where a run on several processes differs from one)."""
        x, _ = examples(stage)
        layers = [model.num_layers - 1] if stage == "val" else list(range(model.num_layers))
        totals = dict.fromkeys(layers, 0.0)
        model.eval()
        with torch.no_grad(), captured(model.sparsity_modules()) as outputs:
            for rank_ in range(world):
                generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
                for xb in eval_batches(x[rank_::world]):
                    for layer in layers:
                        cost, _ = model.reconstruction_loss(xb, layer, generator)
                        totals[layer] += cost.item() * len(xb)
        return self._values(stage, totals, len(x), outputs)

    def _values(self, stage, totals, rows, outputs) -> dict[str, float]:
        values = {f"{stage}/pretrain/layer_{layer + 1}/recon": total / rows for layer, total in totals.items()}
        if stage == "test":
            values["test/recon"] = sum(values.values())
        values.update(activity(stage, {f"layer_{k}": torch.cat(h) for k, h in enumerate(outputs, start=1) if h}))
        return values


class MonitorPart(Part):
    id = "monitor"

    def build(self, epochs: int = 1) -> UserNet:
        return UserNet()

    def monitors(self, **kwargs) -> list[SparsityMonitor]:
        return [SparsityMonitor(modules=["net.1"], **kwargs)]

    def load(self, path: str) -> UserNet:
        return UserNet.load_from_checkpoint(path, map_location="cpu")

    def recount(self, model, stage, n=None, autocast=False):
        x, _ = examples(stage, n)
        model.eval()
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
            captured([model.net[1]]) as outputs,
        ):
            for xb in eval_batches(x):
                model(xb)
        return activity(stage, {"net.1": torch.cat(outputs[0])})


PARTS: dict[str, Part] = {part.id: part for part in (MLPPart(), DAEPart(), HandoffPart(), MonitorPart())}


def register(row: str, function: Callable[[Part], dict], columns=("mlp", "dae", "handoff", "monitor")) -> None:
    for column in columns:
        CHECKS[f"{row}__{column}"] = functools.partial(function, PARTS[column])


@functools.cache
def dae_checkpoint() -> str:
    """A StackedDAE checkpoint (seeded, untrained) for the hand-off; one file per process of a DDP run."""
    SHARED.mkdir(parents=True, exist_ok=True)
    path = SHARED / f"dae-rank{rank()}.ckpt"
    torch.manual_seed(1)
    dae = StackedDAE(64, 10, HIDDEN, epochs_per_layer=1)
    trainer = L.Trainer(max_epochs=1, logger=False, accelerator="cpu", devices=1, **QUIET)
    trainer.strategy.connect(dae)
    trainer.save_checkpoint(path)
    return str(path)


def trainer(**kwargs) -> L.Trainer:
    """A Trainer as the cells use it: one CPU process, 1 epoch of 4 batches, nothing written."""
    args = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=4,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=os.getcwd(),
        **QUIET,
    )
    args.update(kwargs)
    return L.Trainer(**args)


def fit(part: Part, epochs: int = 1, callbacks: list | None = None, **kwargs) -> tuple[L.Trainer, Any, list]:
    model = part.build(epochs)
    callbacks = part.callbacks() + (callbacks or [])
    run = trainer(max_epochs=epochs, callbacks=callbacks, **kwargs)
    run.fit(model, datamodule=datamodule())
    return run, model, callbacks


def recorded(callbacks: list) -> Record:
    return next(cb for cb in callbacks if isinstance(cb, Record))


# ---- strategies ------------------------------------------------------------------------------------


def single(part: Part) -> dict:
    """Fit with a ModelCheckpoint on the part's metric, then test ``ckpt_path="best"``: the test's values
    are those of the best checkpoint's weights (the hand-off's test never reads the pre-training file)."""
    best = ModelCheckpoint(dirpath="checkpoints", monitor=part.metric, mode=part.mode)
    run, model, callbacks = fit(part, epochs=2, callbacks=[best], enable_checkpointing=True)
    part.started_right(callbacks)
    with dae_file_moved(part):
        [result] = run.test(model, datamodule=datamodule(), ckpt_path="best", verbose=False)
    assert same_tensors(model.state_dict(), part.load(best.best_model_path).state_dict()), "tested weights"
    return part.check(result, model, "test")


register("single", single)


def distributed(part: Part, strategy: str, devices: int = 2, launched: tuple | None = None) -> dict:
    """2 CPU processes: the values logged after fit (validation) and by test are those of the whole split
    (every example once), recounted in one process with the weights the run ends with. Under ddp_spawn the
    weights and ``callback_metrics`` come back to this process (its test would spawn again).
    ``launched``: the (trainer, model) of a fit already run so."""
    run, model = launched or launch(part, strategy, devices)
    try:
        values = part.check(run.callback_metrics, model, "val")
    except AssertionError as err:
        if part.id != "dae":
            raise
        per_process = part.recount_per_process(model, "val")
        agrees = {k: math.isclose(float(run.callback_metrics[k]), v, rel_tol=1e-5) for k, v in per_process.items()}
        if agrees and all(agrees.values()):
            # The DAE's validation corrupts each process's share from the evaluation seed: its values are
            # those of that corruption, recounted so, as exact as a single process's of its own.
            values = per_process
        else:
            raise AssertionError(
                f"{err}; the logged values are those of 2 processes each corrupting its share from "
                f"the evaluation seed anew: {all(agrees.values())} ({per_process})"
            ) from None
    if part.id == "handoff":
        assert float(run.callback_metrics.get(FirstWeights.KEY, 0)) == 1.0, "pre-trained weights at the first step"
        assert bool(model.pretrained_loaded), "the weights came back without the pretrained_loaded flag"
    if strategy == "ddp":
        [result] = run.test(model, datamodule=datamodule(), verbose=False)
        values.update(part.check(result, model, "test"))
    elif part.id == "handoff":  # the returned weights never read the pre-training file again
        with dae_file_moved(part):
            x, _ = examples("test")
            before = part.outputs(model, x)
            [result] = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=part.monitors(), **QUIET).test(
                model, datamodule=datamodule(), verbose=False
            )
            assert torch.equal(part.outputs(model, x), before)
            values.update(part.check(result, model, "test"))
    return values


@contextlib.contextmanager
def dae_file_moved(part: Part) -> Iterator[None]:
    """For the hand-off: its pre-training file is elsewhere meanwhile (a model that holds the pre-trained
    weights, or weights trained from them, never reads it again)."""
    if part.id != "handoff":
        yield
        return
    os.replace(dae_checkpoint(), dae_checkpoint() + ".moved")
    try:
        yield
    finally:
        os.replace(dae_checkpoint() + ".moved", dae_checkpoint())


def launch(part: Part, strategy: str, devices: int = 2) -> tuple[L.Trainer, Any]:
    model = part.build()
    run = trainer(strategy=strategy, devices=devices, callbacks=part.callbacks())
    run.fit(model, datamodule=datamodule())
    return run, model


def dae_distributed(part: Part, strategy: str) -> dict:
    """Plain DDP is refused (one layer trains per step); the refusal names the strategy that works, run too
    (under ddp). Under ddp_spawn one process shows the refusal as well as two (the model is wrapped in
    DistributedDataParallel all the same), and saves starting a second."""
    try:
        return distributed(part, strategy, devices=2 if strategy == "ddp" else 1)
    except LightningRectError as refusal:
        if "ddp_find_unused_parameters_true" in str(refusal) and strategy == "ddp":
            distributed(part, "ddp_find_unused_parameters_true")
        raise
    except Exception as err:  # ddp_spawn: the processes' error comes back inside torch's
        raise child_refusal(err) from None


def child_refusal(err: Exception) -> Exception:
    """A spawned process's one-line ``LightningRectError``, as a ``Refusal``; anything else as it is."""
    found = re.findall(r"^lightning_rect\.errors\.\w+: (.*)$", str(err), flags=re.M)
    return Refusal(found[-1]) if found else err


@functools.cache
def spawned_handoff() -> tuple | BaseException:
    """The hand-off under ddp_spawn, launched once for two cells: the hand-off is a SparseMLP, so the
    SparseMLP cell's assertions (the values after fit are a recount with the returned weights) are made on
    the same launch, which saves starting 2 processes. Each cell asserts its own."""
    try:
        return launch(PARTS["handoff"], "ddp_spawn")
    except BaseException as err:
        return err


def spawned(part: Part) -> dict:
    launched = spawned_handoff()
    if isinstance(launched, BaseException):
        raise launched
    if part.id == "handoff":
        return distributed(part, "ddp_spawn", launched=launched)
    run, model = launched
    return part.check(run.callback_metrics, model, "val")


for _column in ("mlp", "handoff", "monitor"):
    CHECKS[f"ddp__{_column}"] = functools.partial(distributed, PARTS[_column], "ddp")
CHECKS["ddp_spawn__mlp"] = functools.partial(spawned, PARTS["mlp"])
CHECKS["ddp_spawn__handoff"] = functools.partial(spawned, PARTS["handoff"])
CHECKS["ddp_spawn__monitor"] = functools.partial(distributed, PARTS["monitor"], "ddp_spawn")
CHECKS["ddp__dae"] = functools.partial(dae_distributed, PARTS["dae"], "ddp")
CHECKS["ddp_spawn__dae"] = functools.partial(dae_distributed, PARTS["dae"], "ddp_spawn")


# ---- entry points ----------------------------------------------------------------------------------


def fit_row(part: Part) -> dict:
    """Validation after fit: its values are the final weights' on the whole validation split."""
    run, model, callbacks = fit(part, epochs=2)
    part.started_right(callbacks)
    return part.check(run.callback_metrics, model, "val")


def fit_dae_greedily(part: Part) -> dict:
    """Two layers, one epoch each, under max_epochs=10: the DAE stops itself after 2 epochs, layer 1 stays
    frozen while layer 2 trains, and val/recon is layer 2's error plus layer 1's at the end of its epoch."""
    dae = DAEPart([16, 8]).build()
    frozen = {}

    class Layer1(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            frozen[trainer.current_epoch] = pl_module.encoder.layers[0].linear.weight.detach().clone()

    run = trainer(max_epochs=10, callbacks=[SparsityMonitor(), Layer1()])
    run.fit(dae, datamodule=datamodule())
    assert run.current_epoch == 2, f"stopped after {run.current_epoch} epochs, not 2"
    assert torch.equal(frozen[1], dae.encoder.layers[0].linear.weight), "layer 1 changed while layer 2 trained"
    values = DAEPart([16, 8]).check(run.callback_metrics, dae, "val", None)
    lower = float(run.callback_metrics["val/pretrain/layer_1/recon"])
    assert math.isclose(
        float(run.callback_metrics["val/recon"]), values["val/pretrain/layer_2/recon"] + lower, rel_tol=1e-5
    ), "val/recon is not layer 2's error plus layer 1's"
    return values


def evaluate(part: Part, stage: str) -> dict:
    """``Trainer.validate`` / ``test`` of a model as built (the hand-off reads its pre-trained weights)."""
    model = part.build()
    callbacks = part.callbacks()
    run = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks, **QUIET)
    [result] = (run.validate if stage == "val" else run.test)(model, datamodule=datamodule(), verbose=False)
    part.started_right(callbacks)
    return part.check(result, model, stage)


def predict(part: Part) -> dict:
    """``Trainer.predict`` on the data module: one prediction per test example, in order."""
    model = part.build()
    callbacks = part.callbacks()
    batches = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks, **QUIET).predict(
        model, datamodule=datamodule()
    )
    part.started_right(callbacks)
    x, _ = examples("test")
    predicted, expected = torch.cat(batches), part.predictions(model, x)
    same = (
        torch.allclose(predicted, expected, atol=1e-6)
        if predicted.is_floating_point()
        else torch.equal(predicted, expected)
    )
    assert same, "predictions differ from the model's outputs"
    return {"predictions": len(predicted)}


register("fit", fit_row, ("mlp", "handoff", "monitor"))
CHECKS["fit__dae"] = functools.partial(fit_dae_greedily, PARTS["dae"])
register("validate", functools.partial(evaluate, stage="val"))
register("test", functools.partial(evaluate, stage="test"))
register("predict", predict)


def linked_cli(part: Part, *args: str):
    """Lightning's own LightningCLI with this package's model (sizes linked from the data module with
    ``link_data_sizes``, as the README says) or the user's (nothing to link)."""
    from lightning.pytorch.cli import LightningCLI

    from lightning_rect.app.cli import link_data_sizes

    class LinkedCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            if part.id != "monitor":
                link_data_sizes(parser, self.subclass_mode_model)

    model_class = {"mlp": SparseMLP, "handoff": SparseMLP, "dae": StackedDAE, "monitor": UserNet}[part.id]
    common = [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.default_root_dir=.",
        f"--data.batch_size={BATCH}",
        f"--data.eval_batch_size={EVAL_BATCH}",
        f"--model.lr={LR}",
        "--trainer.callbacks+=lightning_rect.callbacks.SparsityMonitor",
    ]
    common += {
        "monitor": ["--trainer.callbacks.modules=[net.1]"],
        "dae": ["--model.epochs_per_layer=1"],
        "handoff": [f"--model.pretrained={dae_checkpoint()}"],
    }.get(part.id, [])
    common += [f"--model.hidden_sizes={HIDDEN}"] if part.id != "monitor" else []
    if part.id == "handoff":
        common += ["--trainer.callbacks+=cells.FirstWeights", f"--trainer.callbacks.reference={dae_checkpoint()}"]
    return LinkedCLI(
        model_class, DigitsDataModule, args=[args[0], *common, *args[1:]], save_config_kwargs={"overwrite": True}
    )


def lightning_cli(part: Part) -> dict:
    """``fit`` then ``test --ckpt_path`` of Lightning's LightningCLI: values recounted with the model's weights,
    then with the checkpoint's."""
    cli = linked_cli(part, "fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4")
    part.started_right(cli.trainer.callbacks)
    values = part.check(cli.trainer.callback_metrics, cli.model, "val")
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    tested = linked_cli(part, "test", f"--ckpt_path={ckpt}")
    values.update(part.check(tested.trainer.callback_metrics, part.load(ckpt), "test"))
    return values


register("lightning_cli", lightning_cli)


class Recorder(FabricLogger):
    """A Fabric logger that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}

    name = property(lambda self: "recorder")
    version = property(lambda self: 0)

    def log_metrics(self, metrics, step=None):
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def fabric_loop(model, dm, callbacks=(), steps: int = 3, after_first_step: Callable | None = None) -> Recorder:
    """Fabric's guide: setup, the data module's DataLoaders through ``setup_dataloaders``, a few training
    steps, then a validation epoch, the hooks called with ``fabric.call`` (which calls the LightningModule's
    and the callbacks'); returns what was logged."""
    recorder = Recorder()
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[recorder], callbacks=list(callbacks))
    optimizer = model.configure_optimizers()
    wrapped, optimizer = fabric.setup(model, optimizer)
    dm.setup("fit")
    train, val = fabric.setup_dataloaders(dm.train_dataloader(), dm.val_dataloader())
    hooks = dict(trainer=fabric, pl_module=model)  # Fabric passes each hook the keywords it takes
    fabric.call("setup", stage="fit", **hooks)
    fabric.call("on_train_epoch_start", **hooks)
    for index, batch in enumerate(train):
        if index == steps:
            break
        loss = wrapped.training_step(batch, index)
        if after_first_step is not None and index == 0:
            after_first_step()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    fabric.call("on_train_epoch_end", **hooks)
    wrapped.eval()
    fabric.call("on_validation_epoch_start", **hooks)
    with torch.no_grad():
        for index, batch in enumerate(val):
            wrapped.validation_step(batch, index)
    fabric.call("on_validation_epoch_end", **hooks)
    return recorder


def fabric_row(part: Part) -> dict:
    model = part.build()
    started = {}

    def first_step():
        if part.id == "handoff":
            encoder = StackedDAE.load_encoder(dae_checkpoint())
            started["pretrained"] = torch.equal(model.encoder.layers[0].linear.weight, encoder.layers[0].linear.weight)

    callbacks = part.monitors() if part.id == "monitor" else []
    recorder = fabric_loop(model, datamodule(), callbacks, after_first_step=first_step)
    if part.id == "handoff":
        assert started["pretrained"], "the first Fabric step did not use the pre-trained encoder"
    expected = part.recount(model, "val")
    if part.id == "dae":
        expected = {k: v for k, v in expected.items() if "recon" in k}
    else:  # no SparsityMonitor under Fabric: the model's own values
        expected = {k: v for k, v in expected.items() if "/sparsity/" not in k and "/dead/" not in k}
    return assert_values(recorder.metrics, expected)


register("fabric", fabric_row)


# ---- Trainer flags ---------------------------------------------------------------------------------


def fast_dev_run(part: Part) -> dict:
    """Lightning's check: 2 training batches and 2 validation batches, whatever the limits, and nothing written
    (a logger is given); the validation values are those of the first 2 batches (200 examples) with the
    weights after 2 steps."""
    from lightning_rect.app.loggers import CSVLogger

    run, model, callbacks = fit(part, callbacks=[Record()], fast_dev_run=2, logger=CSVLogger("logs"))
    assert not list(Path.cwd().rglob("*")), f"fast_dev_run wrote {list(Path.cwd().rglob('*'))}"
    record = recorded(callbacks)
    assert [len(b) for b in record.train_batches.values()] == [2] and run.global_step == 2, record.train_batches
    assert record.val_runs == 1
    return part.check(run.callback_metrics, model, "val", n=2 * EVAL_BATCH)


def overfit_batches(part: Part) -> dict:
    """The same 2 training batches, the first two of the split in order, in both epochs; validation on its
    first 2 batches, with the final weights."""
    run, model, callbacks = fit(part, epochs=2, callbacks=[Record()], overfit_batches=2, limit_train_batches=None)
    batches = recorded(callbacks).train_batches
    assert len(batches) == 2 and len(batches[0]) == 2 and batches[0] == batches[1], "not the same batches"
    _, y = examples("train", 2 * BATCH)
    assert [label for batch in batches[0] for label in batch] == y.tolist(), "not the first 2 training batches"
    return part.check(run.callback_metrics, model, "val", n=2 * EVAL_BATCH)


def limit_batches(part: Part) -> dict:
    """3 training batches per epoch; validation on half of its 3 batches, i.e. its first 100 examples."""
    run, model, callbacks = fit(part, callbacks=[Record()], limit_train_batches=3, limit_val_batches=0.5)
    assert [len(b) for b in recorded(callbacks).train_batches.values()] == [3]
    return part.check(run.callback_metrics, model, "val", n=EVAL_BATCH)


def limit_train_0(part: Part) -> dict:
    """No training batch: nothing trained, nothing validated; the weights are the model's as built (the
    hand-off's: the pre-trained ones), and a test afterwards evaluates them."""
    model = part.build()
    built = copy.deepcopy(model.state_dict())
    callbacks = part.callbacks()
    run = trainer(callbacks=callbacks, limit_train_batches=0)
    run.fit(model, datamodule=datamodule())
    assert run.global_step == 0 and not floats(run.callback_metrics, "val/")
    if part.id == "handoff":
        first = FirstWeights(dae_checkpoint())
        first._first(run, model)
        assert bool(model.pretrained_loaded) and first.matched, "the weights are not the pre-trained ones"
    else:
        assert same_tensors(model.state_dict(), built), "weights changed without a training batch"
    [result] = run.test(model, datamodule=datamodule(), verbose=False)
    return part.check(result, model, "test")


def limit_val_0(part: Part) -> dict:
    """No validation: nothing under val/ is logged, training runs its 4 steps, and a test evaluates the result."""
    run, model, callbacks = fit(part, limit_val_batches=0)
    assert run.global_step == 4 and not floats(run.callback_metrics, "val/"), floats(run.callback_metrics, "val/")
    [result] = run.test(model, datamodule=datamodule(), verbose=False)
    return part.check(result, model, "test")


def val_check_interval(part: Part) -> dict:
    """Validation twice an epoch (after batches 2 and 4); the last is the final weights'."""
    run, model, callbacks = fit(part, callbacks=[Record()], val_check_interval=0.5)
    assert recorded(callbacks).val_runs == 2
    return part.check(run.callback_metrics, model, "val")


def check_val_every_n_epoch(part: Part) -> dict:
    """Two epochs, validation after the second only."""
    run, model, callbacks = fit(part, epochs=2, callbacks=[Record()], check_val_every_n_epoch=2)
    assert recorded(callbacks).val_runs == 1 and run.current_epoch == 2
    return part.check(run.callback_metrics, model, "val")


def no_sanity(part: Part) -> dict:
    """No sanity check before training: one validation, after the epoch."""
    run, model, callbacks = fit(part, callbacks=[Record()], num_sanity_val_steps=0)
    record = recorded(callbacks)
    assert (record.sanity_runs, record.val_runs) == (0, 1)
    return part.check(run.callback_metrics, model, "val")


def accumulate(part: Part) -> dict:
    """4 batches, 2 optimizer steps."""
    run, model, callbacks = fit(part, accumulate_grad_batches=2)
    assert run.global_step == 2, run.global_step
    return part.check(run.callback_metrics, model, "val")


def clip(part: Part) -> dict:
    """Gradient norm clipped to CLIP: plain SGD's first step moves the weights by exactly lr x CLIP."""
    run, model, callbacks = fit(part, callbacks=[Record()], gradient_clip_val=CLIP, limit_train_batches=1)
    record = recorded(callbacks)
    assert math.isclose(record.first_update, record.lr * CLIP, rel_tol=1e-2), (record.first_update, record.lr * CLIP)
    values = part.check(run.callback_metrics, model, "val")
    return {"update norm": record.first_update, **values}


def bf16(part: Part) -> dict:
    """bf16 autocast on the CPU: the values are a recount under the same autocast."""
    run, model, callbacks = fit(part, precision="bf16-mixed")
    return part.check(run.callback_metrics, model, "val", autocast=True)


def deterministic(part: Part) -> dict:
    """Deterministic algorithms on during fit, and two seeded fits end with the same weights."""
    weights = []
    with deterministic_off_before_and_after():
        for _ in range(2):
            torch.use_deterministic_algorithms(False)
            L.seed_everything(0, verbose=False)
            run, model, callbacks = fit(part, callbacks=[Record()], deterministic=True)
            assert recorded(callbacks).deterministic
            weights.append(model.state_dict())
    assert same_tensors(*weights), "two seeded deterministic fits differ"
    return part.check(run.callback_metrics, model, "val")


@contextlib.contextmanager
def deterministic_off_before_and_after() -> Iterator[None]:
    """Lightning's ``deterministic=True`` switches torch's deterministic algorithms on for the process and
    leaves them on: off before, so the check sees the flag turn them on, and off after, for the next cells."""
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


for _row, _function in [
    ("fast_dev_run", fast_dev_run),
    ("overfit_batches", overfit_batches),
    ("limit_batches", limit_batches),
    ("limit_train_0", limit_train_0),
    ("limit_val_0", limit_val_0),
    ("val_check_interval", val_check_interval),
    ("check_val_every_n_epoch", check_val_every_n_epoch),
    ("no_sanity", no_sanity),
    ("accumulate", accumulate),
    ("clip", clip),
    ("bf16", bf16),
    ("deterministic", deterministic),
]:
    register(_row, _function)


# ---- loggers ---------------------------------------------------------------------------------------


def csv_values(path: Path) -> dict[str, float]:
    """The last value of every column of a metrics.csv."""
    values = {}
    with path.open() as file:
        for row in csv.DictReader(file):
            values.update({k: float(v) for k, v in row.items() if v not in (None, "")})
    return values


def rates_file_rows(folder: Path, layer: str) -> int:
    saved = json.loads((folder / "firing_rates.json").read_text())
    return saved["val"]["layers"][layer]["rows"]


def with_logger(part: Part, make_logger: Callable[[], Any], read: Callable[[Any], dict[str, float]]) -> dict:
    """Validation values as the logger stored them, against the recount; the monitor's rates file in the
    run's own folder, counting the whole validation split."""
    logger = make_logger()
    run, model, callbacks = fit(part, logger=logger)
    values = assert_values(read(logger), part.recount(model, "val"), what="stored by the logger")
    folder = Path(
        run.log_dir
        if getattr(logger, "log_dir", None)
        else Path(logger.save_dir) / str(logger.name) / str(logger.version)
    )
    layer = "net.1" if part.id == "monitor" else "layer_1"
    assert rates_file_rows(folder, layer) == len(examples("val")[0]), "firing_rates.json"
    return values


def our_csv(part: Part) -> dict:
    from lightning_rect.app.loggers import CSVLogger

    return with_logger(
        part, lambda: CSVLogger("logs", name="ours"), lambda lg: csv_values(Path(lg.log_dir) / "metrics.csv")
    )


def lightning_csv(part: Part) -> dict:
    from lightning.pytorch.loggers import CSVLogger

    return with_logger(
        part, lambda: CSVLogger("logs", name="lightning"), lambda lg: csv_values(Path(lg.log_dir) / "metrics.csv")
    )


def tensorboard_scalars(log_dir: str) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir)
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def tensorboard(part: Part) -> dict:
    from lightning.pytorch.loggers import TensorBoardLogger

    return with_logger(part, lambda: TensorBoardLogger("logs", name="tb"), lambda lg: tensorboard_scalars(lg.log_dir))


def mlflow_metrics(logger) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(tracking_uri=logger._tracking_uri).get_run(logger.run_id).data.metrics)


#: MLflow 3 refuses its file store unless told (it recommends a database); the row is the file store.
MLFLOW_FILE_STORE = {"MLFLOW_ALLOW_FILE_STORE": "true"}


def mlflow(part: Part) -> dict:
    from lightning.pytorch.loggers import MLFlowLogger

    os.environ.update(MLFLOW_FILE_STORE)
    uri = (Path.cwd() / "mlruns").as_uri()
    return with_logger(part, lambda: MLFlowLogger(experiment_name="compat", tracking_uri=uri), mlflow_metrics)


def finished_offline_run(run_dir: Path, last_key: str):
    """The offline W&B run in ``run_dir`` (read with the checkout's tests/helpers/wandb_log.py), ended with
    ``wandb.finish()`` as a script ends it, once its records up to ``last_key`` are on disk (W&B's service
    process may still be writing them when ``finish`` returns)."""
    import wandb

    wandb.finish()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers.wandb_log import read_offline_run

    for _ in range(100):
        offline = read_offline_run(run_dir)
        if last_key in offline.summary:
            break
        time.sleep(0.1)
    return offline


def wandb_history(logger) -> dict[str, float]:
    offline = finished_offline_run(Path(logger.experiment.dir).parent, "val/sparsity/mean")
    return {k: v for k, v in offline.history.items() if isinstance(v, (int, float))}


def wandb_offline(part: Part) -> dict:
    from lightning.pytorch.loggers import WandbLogger

    # an absolute save_dir: W&B's service process resolves relative ones from the folder of the first run
    return with_logger(
        part, lambda: WandbLogger(save_dir=str(Path.cwd()), offline=True, project="compat"), wandb_history
    )


def no_logger(part: Part) -> dict:
    """``logger=False``: the values reach ``callback_metrics``; no file is written (the monitor's rates file
    needs a run folder, and there is none)."""
    run, model, callbacks = fit(part, logger=False)
    assert not list(Path.cwd().rglob("*")), f"files written without a logger: {list(Path.cwd().rglob('*'))}"
    return part.check(run.callback_metrics, model, "val")


for _row, _function in [
    ("log_ours", our_csv),
    ("log_csv", lightning_csv),
    ("log_tensorboard", tensorboard),
    ("log_mlflow", mlflow),
    ("log_wandb", wandb_offline),
    ("log_none", no_logger),
]:
    register(_row, _function)


# ---- callbacks beside ours -------------------------------------------------------------------------


def watched_name(part: Part, model) -> str:
    """The qualified module name of the first layer the part's monitor watches."""
    if part.id == "monitor":
        return "net.1"
    first = model.sparsity_modules()[0]
    return next(name for name, module in model.named_modules() if module is first)


def two_monitors(part: Part) -> dict:
    """Two monitors need names (two unnamed ones are refused at setup); named, each logs its own values,
    both equal to the recount."""
    model = part.build()
    name = watched_name(part, model)
    kind = type(dict(model.named_modules())[name]).__name__  # the second watches the same layer by class name
    try:
        trainer(callbacks=part.monitors() + [SparsityMonitor(modules=[kind])]).fit(
            part.build(), datamodule=datamodule()
        )
        raise AssertionError("two unnamed monitors were not refused")
    except LightningRectError as err:
        assert "give each its own name" in str(err), err
    callbacks = part.monitors(name="a") + [SparsityMonitor(modules=[kind], name="b")]
    if part.id == "handoff":
        callbacks.append(FirstWeights(dae_checkpoint()))
    run = trainer(callbacks=callbacks)
    run.fit(model, datamodule=datamodule())
    part.started_right(callbacks)
    recount = part.recount(model, "val")
    layer = "net.1" if part.id == "monitor" else "layer_1"
    expected = {
        f"val/sparsity/a/{layer}": recount[f"val/sparsity/{layer}"],
        f"val/sparsity/b/{name}": recount[f"val/sparsity/{layer}"],
        f"val/dead/b/{name}": recount[f"val/dead/{layer}"],
        "val/sparsity/b/mean": recount["val/sparsity/mean"],
    }
    return assert_values(run.callback_metrics, expected)


def checkpoint_sparsity(part: Part) -> dict:
    """ModelCheckpoint on the monitor's mean sparsity, mode max, over 2 epochs: it keeps the epoch with the
    highest logged value, and that checkpoint's weights recount to it."""
    best = ModelCheckpoint(dirpath="checkpoints", monitor="val/sparsity/mean", mode="max", filename="sparsest")
    run, model, callbacks = fit(part, epochs=2, callbacks=[best, Record()], enable_checkpointing=True)
    logged = [values["val/sparsity/mean"] for values in recorded(callbacks).val_metrics]
    assert len(logged) == 2 and math.isclose(float(best.best_model_score), max(logged), rel_tol=1e-6), logged
    recount = part.recount(part.load(best.best_model_path), "val")
    return {
        "best": assert_values(
            {"val/sparsity/mean": best.best_model_score}, {"val/sparsity/mean": recount["val/sparsity/mean"]}
        )
    }


def early_stopping(part: Part) -> dict:
    """EarlyStopping with a threshold every value passes: the fit stops after its first epoch (of 5), and the
    value it stopped on is the final weights'."""
    threshold = {"min": 1e9, "max": -1.0}[part.mode]
    stop = EarlyStopping(monitor=part.metric, mode=part.mode, stopping_threshold=threshold)
    run, model, callbacks = fit(part, epochs=5, callbacks=[stop])
    assert run.current_epoch == 1 and stop.stopped_epoch == 0, (run.current_epoch, stop.stopped_epoch)
    return part.check(run.callback_metrics, model, "val")


for _row, _function in [
    ("two_monitors", two_monitors),
    ("checkpoint_sparsity", checkpoint_sparsity),
    ("early_stopping", early_stopping),
]:
    register(_row, _function)


# ---- export ----------------------------------------------------------------------------------------


def exported_outputs(how: str, model, x: torch.Tensor) -> torch.Tensor:
    """What the exported network computes for ``x``."""
    sample = x[:7]
    if how == "torch_export":
        batch = torch.export.Dim("batch")
        return torch.export.export(model, (sample,), dynamic_shapes=({0: batch},)).module()(x)
    if how == "jit_trace":
        return model.to_torchscript(method="trace", example_inputs=sample)(x)
    if how == "onnx":
        import onnx
        from onnx.reference import ReferenceEvaluator

        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                model, (sample,), buffer, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
            )
        proto = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(proto)
        return torch.from_numpy(ReferenceEvaluator(proto).run(None, {"x": x.numpy()})[0])
    raise ValueError(how)


def as_sequential(part: Part, model) -> nn.Sequential:
    if isinstance(model, StackedDAE):
        return model.encoder.to_sequential()
    return nn.Sequential(*model.encoder.to_sequential(), model.head, nn.LogSoftmax(dim=-1))


def export_after_fit(part: Part, how: str) -> dict:
    """The fitted model (the hand-off: loaded from its fine-tuning checkpoint, as one deploys it) exported;
    the export computes what the model computes."""
    run, model, callbacks = fit(part)
    if part.id == "handoff":
        run.save_checkpoint("fine.ckpt")
        model = part.load("fine.ckpt")
    model.eval()
    x, _ = examples("test")
    with torch.no_grad():
        ours = exported_outputs(how, model, x) if how != "sequential" else as_sequential(part, model)(x)
        theirs = part.outputs(model, x)
    assert torch.allclose(ours, theirs, atol=1e-5), f"max difference {(ours - theirs).abs().max().item()}"
    return {"examples": len(x)}


def export_while_watched(how: str) -> dict:
    """The user's model exported by a callback mid-fit (after validation, as one exports the best model),
    while a SparsityMonitor watches it: the export computes what the model computes, and the export's
    forward passes are not counted as training outputs (train/sparsity is the training batch's)."""
    part = PARTS["monitor"]
    seen: dict[str, Any] = {}

    class ExportAfterValidation(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["batch"], seen["weights"] = batch[0].clone(), copy.deepcopy(pl_module.state_dict())

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                pl_module.eval()
                with torch.no_grad():
                    seen["exported"] = exported_outputs(how, pl_module, examples("test")[0])
                pl_module.train()

    run, model, callbacks = fit(part, callbacks=[ExportAfterValidation()], limit_train_batches=1)
    theirs = part.outputs(model, examples("test")[0])
    assert torch.allclose(seen["exported"], theirs, atol=1e-5), "the export computes something else"
    start = UserNet()
    start.load_state_dict(seen["weights"])
    with torch.no_grad():
        h = start.net[1](start.net[0](seen["batch"]))
    return assert_values(run.callback_metrics, activity("train", {"net.1": h}), what="train values logged")


def sequential_watched() -> dict:
    """The user's model built around a pre-trained encoder as a plain ``nn.Sequential``
    (``StackedDAE.load_encoder(...).to_sequential()``), its rectifiers watched by class name."""

    class OnPretrained(UserNet):
        def __init__(self, pretrained: str) -> None:
            super().__init__()
            self.net = nn.Sequential(*StackedDAE.load_encoder(pretrained).to_sequential(), nn.Linear(16, 10))

    model = OnPretrained(dae_checkpoint())
    rectifiers = [name for name, m in model.named_modules() if type(m).__name__ == "Rectifier"]
    assert rectifiers == ["net.1"], rectifiers
    run = trainer(callbacks=[SparsityMonitor(modules=["Rectifier"])])
    run.fit(model, datamodule=datamodule())
    return assert_values(run.callback_metrics, PARTS["monitor"].recount(model, "val"))


for _how in ("torch_export", "jit_trace", "onnx", "sequential"):
    register(_how, functools.partial(export_after_fit, how=_how), ("mlp", "dae", "handoff"))
for _how in ("torch_export", "jit_trace", "onnx"):
    CHECKS[f"{_how}__monitor"] = functools.partial(export_while_watched, _how)
CHECKS["sequential__monitor"] = sequential_watched


# ---- copies ----------------------------------------------------------------------------------------


def copies_mid_fit(part: Part) -> dict:
    """``pickle`` and ``copy.deepcopy`` of the model mid-fit (after validation, hooks attached): the copies
    compute what the fitted model computes, and their forward passes are not counted (train/sparsity is the
    training batch's)."""
    seen: dict[str, Any] = {}

    class Copy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["batch"], seen["weights"] = batch[0].clone(), copy.deepcopy(pl_module.state_dict())

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                seen["copies"] = [pickle.loads(pickle.dumps(pl_module)), copy.deepcopy(pl_module)]
                for twin in seen["copies"]:
                    with torch.no_grad():
                        twin(examples("test")[0])

    run, model, callbacks = fit(part, callbacks=[Copy()], limit_train_batches=1)
    x, _ = examples("test")
    for twin in seen["copies"]:
        assert torch.equal(part.outputs(twin, x), part.outputs(model, x)), "a copy computes something else"
        if part.id == "handoff":
            assert bool(twin.pretrained_loaded)
    start = part.build()
    start.load_state_dict(seen["weights"])
    start.eval()
    modules = [start.net[1]] if part.id == "monitor" else start.sparsity_modules()
    with torch.no_grad(), captured(modules) as outputs:
        if part.id == "dae":  # the training step: layer 1 on the corrupted batch, the epoch's generator
            start.reconstruction_loss(
                seen["batch"], 0, torch.Generator().manual_seed((torch.initial_seed() * 7919) % (2**63))
            )
        else:
            start(seen["batch"])
    layers = {"net.1" if part.id == "monitor" else "layer_1": torch.cat(outputs[0])}
    expected = activity("train", layers)
    return assert_values(run.callback_metrics, expected, what="train values logged")


register("pickle", copies_mid_fit)


# ---- the CLI ---------------------------------------------------------------------------------------


class CliRun:
    def __init__(self, cwd: Path, stdout: str, stderr: str, records: list[Record]) -> None:
        self.cwd, self.stdout, self.stderr, self.records = cwd, stdout, stderr, records

    @property
    def record(self) -> Record:
        return self.records[-1]

    @property
    def folder(self) -> Path:
        """The run folder: where results.json is (not the copy attached to an offline W&B run)."""
        [path] = [p for p in self.cwd.rglob("results.json") if "wandb" not in p.relative_to(self.cwd).parts]
        return path.parent

    @property
    def results(self) -> dict:
        return json.loads((self.folder / "results.json").read_text())


CLI_BASE = [
    "--config",
    "configs/digits.yaml",
    f"--model.init_args.hidden_sizes={HIDDEN}",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=4",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    f"--data.init_args.batch_size={BATCH}",
    f"--data.init_args.eval_batch_size={EVAL_BATCH}",
    "--trainer.callbacks+=cells.Record",
]


def cli(command: str, *args: str, base: bool = True, folder: str | Path | None = None) -> CliRun:
    """``lightning-rect <command> <args>`` in this process (the console script's ``main``), in ``folder``
    (default: the cell's own). Exit code 2 with one ``error:`` line is the CLI's refusal."""
    from lightning_rect.app.cli import main

    cwd = Path(folder or Path.cwd()).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    here, argv, count = os.getcwd(), sys.argv, len(Record.instances)
    try:
        os.chdir(cwd)
        sys.argv = [sys.argv[0]]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([command, *(CLI_BASE if base else []), *args])
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(here)
        sys.argv = argv
    errors = [line.removeprefix("error: ") for line in err.getvalue().splitlines() if line.startswith("error: ")]
    if code == 2 and len(errors) == 1:
        raise Refusal(errors[0])
    if code != 0:
        raise RuntimeError(f"lightning-rect {command} exited with {code}: {err.getvalue()[-1500:]}")
    return CliRun(cwd, out.getvalue(), err.getvalue(), Record.instances[count:])


@functools.cache
def cli_base_run() -> CliRun:
    """One ``fit`` with the bundled digits config (read from the installed package), shared by the cells
    that read a finished CLI run: its results, metrics.csv, checkpoints."""
    return cli("fit", "--trainer.max_epochs=2", folder=SHARED / "cli_base")


def results_recount(run: CliRun, autocast: bool = False) -> dict:
    """results.json's test values are those of the checkpoint it names."""
    results = run.results
    model = SparseMLP.load_from_checkpoint(results["checkpoint"], map_location="cpu")
    return assert_values(results, PARTS["mlp"].recount(model, "test", autocast=autocast), what="results.json")


def cli_single() -> dict:
    return results_recount(cli_base_run())


def cli_fit() -> dict:
    """metrics.csv's last validation values are those of the last checkpoint's weights."""
    run = cli_base_run()
    model = SparseMLP.load_from_checkpoint(run.folder / "checkpoints" / "last.ckpt", map_location="cpu")
    return assert_values(csv_values(run.folder / "metrics.csv"), PARTS["mlp"].recount(model, "val"), what="metrics.csv")


def cli_evaluate(stage: str) -> dict:
    ckpt = cli_base_run().results["checkpoint"]
    run = cli("validate" if stage == "val" else "test", "--trainer.max_epochs=2", f"--ckpt_path={ckpt}")
    logged = run.record.val_metrics[-1] if stage == "val" else run.record.test_metrics
    model = SparseMLP.load_from_checkpoint(ckpt, map_location="cpu")
    return assert_values(logged, PARTS["mlp"].recount(model, stage))


def cli_predict() -> dict:
    ckpt = cli_base_run().results["checkpoint"]
    run = cli("predict", "--trainer.max_epochs=2", f"--ckpt_path={ckpt}")
    [path] = list(run.cwd.rglob("predictions.pt"))
    predicted = torch.load(path)
    model = SparseMLP.load_from_checkpoint(ckpt, map_location="cpu")
    assert torch.equal(predicted, PARTS["mlp"].predictions(model.eval(), examples("test")[0]))
    return {"predictions": len(predicted)}


@functools.cache
def written_configs() -> Path:
    """``lightning-rect configs DIR`` (the console script's ``main``): the bundled configs written out, as a
    user edits them."""
    from lightning_rect.__main__ import main

    argv = sys.argv
    try:
        sys.argv = ["lightning-rect", "configs", str(SHARED / "written")]
        with contextlib.redirect_stdout(io.StringIO()):
            main()
    finally:
        sys.argv = argv
    return SHARED / "written"


def cli_own_script() -> dict:
    """``RectCLI(SparseMLP, DigitsDataModule)`` in the user's script runs fit as the fit command does."""
    from lightning_rect.app.cli import RectCLI

    args = [
        "fit",
        "--seed_everything=0",
        f"--model.hidden_sizes={HIDDEN}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=4",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.logger=lightning_rect.app.loggers.CSVLogger",
        "--trainer.logger.save_dir=runs",
        "--trainer.callbacks+=lightning_rect.callbacks.SparsityMonitor",
        f"--data.batch_size={BATCH}",
        f"--data.eval_batch_size={EVAL_BATCH}",
    ]
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        RectCLI(SparseMLP, DigitsDataModule, args=args)
    return results_recount(CliRun(Path.cwd(), "", "", []))


def cli_fabric() -> dict:
    """The model and data module a config builds (``RectCLI(..., run=False)``), trained in a Fabric loop."""
    from lightning_rect.app.cli import RectCLI

    config = written_configs() / "configs" / "digits.yaml"
    built = RectCLI(
        args=[
            "--config",
            str(config),
            "--model.init_args.hidden_sizes=[16]",
            f"--data.init_args.batch_size={BATCH}",
            f"--data.init_args.eval_batch_size={EVAL_BATCH}",
            "--trainer.logger=false",
        ],
        run=False,
    )
    recorder = fabric_loop(built.model, built.datamodule)
    expected = {k: v for k, v in PARTS["mlp"].recount(built.model, "val").items() if k in ("val/err",)}
    return assert_values(recorder.metrics, expected)


CHECKS.update(
    {
        "single__cli": cli_single,
        "fit__cli": cli_fit,
        "validate__cli": functools.partial(cli_evaluate, "val"),
        "test__cli": functools.partial(cli_evaluate, "test"),
        "predict__cli": cli_predict,
        "lightning_cli__cli": cli_own_script,
        "fabric__cli": cli_fabric,
    }
)


def cli_flag(*args: str, autocast: bool = False, check: Callable[[CliRun], None] | None = None) -> dict:
    """``fit`` with a Trainer flag: ``check`` asserts what the run did; results.json's test values are the
    kept checkpoint's."""
    run = cli("fit", *args)
    if check is not None:
        check(run)
    return results_recount(run, autocast=autocast)


def cli_fast_dev_run() -> dict:
    """One batch of fit and of test, the one line that says so, and nothing written."""
    run = cli("fit", "--trainer.fast_dev_run=true")
    assert "fast_dev_run: fit and test ran 1 batch each as a check; nothing was written" in run.stderr, run.stderr
    assert not list(run.cwd.rglob("*.json")) and not list(run.cwd.rglob("*.ckpt")), list(run.cwd.rglob("*"))
    record = run.record
    assert [len(b) for b in record.train_batches.values()] == [1]
    return assert_values(record.test_metrics, PARTS["mlp"].recount(record.model, "test", n=EVAL_BATCH))


def cli_limit_val_0() -> dict:
    """No validation: no val/ values, and results.json tests the last weights (no best to pick)."""
    run = cli("fit", "--trainer.limit_val_batches=0")
    assert not run.record.val_metrics and run.results.get("best_val") is None, run.results
    model = SparseMLP.load_from_checkpoint(run.folder / "checkpoints" / "last.ckpt", map_location="cpu")
    return assert_values(run.results, PARTS["mlp"].recount(model, "test"), what="results.json")


def same_batches(run: CliRun) -> None:
    batches = run.record.train_batches
    assert len(batches) == 2 and len(batches[0]) == 2 and batches[0] == batches[1], "not the same batches"


def steps_per_epoch(n: int):
    def check(run: CliRun) -> None:
        assert [len(b) for b in run.record.train_batches.values()] == [n]

    return check


def val_runs(n: int, sanity: int | None = None):
    def check(run: CliRun) -> None:
        assert run.record.val_runs == n, run.record.val_runs
        assert sanity is None or run.record.sanity_runs == sanity

    return check


def global_step(n: int):
    def check(run: CliRun) -> None:
        assert run.record.global_step == n, run.record.global_step

    return check


def clipped(run: CliRun) -> None:
    record = run.record
    assert math.isclose(record.first_update, record.lr * CLIP, rel_tol=1e-2), (record.first_update, record.lr * CLIP)


def cli_deterministic() -> dict:
    """Deterministic algorithms on, and the same command twice gives the same weights and results."""
    with deterministic_off_before_and_after():
        first = cli("fit", "--trainer.deterministic=true", folder="first")
        torch.use_deterministic_algorithms(False)
        second = cli("fit", "--trainer.deterministic=true", folder="second")
    assert first.record.deterministic and second.record.deterministic
    ckpts = [SparseMLP.load_from_checkpoint(r.results["checkpoint"]).state_dict() for r in (first, second)]
    assert same_tensors(*ckpts), "two runs of the same command differ"
    return results_recount(second)


CHECKS.update(
    {
        "fast_dev_run__cli": cli_fast_dev_run,
        "overfit_batches__cli": functools.partial(
            cli_flag, "--trainer.overfit_batches=2", "--trainer.max_epochs=2", check=same_batches
        ),
        "limit_batches__cli": functools.partial(
            cli_flag, "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=0.5", check=steps_per_epoch(3)
        ),
        "limit_train_0__cli": functools.partial(cli_flag, "--trainer.limit_train_batches=0"),
        "limit_val_0__cli": cli_limit_val_0,
        "val_check_interval__cli": functools.partial(cli_flag, "--trainer.val_check_interval=0.5", check=val_runs(2)),
        "check_val_every_n_epoch__cli": functools.partial(
            cli_flag, "--trainer.check_val_every_n_epoch=2", "--trainer.max_epochs=2", check=val_runs(1)
        ),
        "no_sanity__cli": functools.partial(cli_flag, "--trainer.num_sanity_val_steps=0", check=val_runs(1, sanity=0)),
        "accumulate__cli": functools.partial(cli_flag, "--trainer.accumulate_grad_batches=2", check=global_step(2)),
        "clip__cli": functools.partial(
            cli_flag, f"--trainer.gradient_clip_val={CLIP}", "--trainer.limit_train_batches=1", check=clipped
        ),
        "bf16__cli": functools.partial(cli_flag, "--trainer.precision=bf16-mixed", autocast=True),
        "deterministic__cli": cli_deterministic,
    }
)


def cli_logger(
    *args: str,
    read: Callable[[CliRun], dict[str, float]],
    folder_of: Callable[[CliRun], Path] | None = None,
) -> dict:
    """``fit`` with another logger: results.json in the run's own folder (with its checkpoints and the
    monitor's rates file), its test values the kept checkpoint's, and the logger holding the validation
    values of the last epoch (the last checkpoint's weights)."""
    run = cli("fit", *args)
    values = results_recount(run)
    folder = run.folder
    assert (folder / "checkpoints" / "last.ckpt").is_file(), f"results.json in {folder}, not beside the checkpoints"
    assert rates_file_rows(folder, "layer_1") == len(examples("val")[0])
    last = SparseMLP.load_from_checkpoint(folder / "checkpoints" / "last.ckpt", map_location="cpu")
    stored = read(run)
    values.update(assert_values(stored, PARTS["mlp"].recount(last, "val"), what="stored by the logger"))
    return values


def cli_our_csv() -> dict:
    """The base run's metrics.csv holds, at the best epoch, the kept checkpoint's validation values."""
    run = cli_base_run()
    results = run.results
    with (run.folder / "metrics.csv").open() as file:
        rows = [r for r in csv.DictReader(file) if r.get("val/err") and int(r["epoch"]) == results["best_epoch"]]
    logged = {k: float(v) for row in rows for k, v in row.items() if v}
    model = SparseMLP.load_from_checkpoint(results["checkpoint"], map_location="cpu")
    assert math.isclose(logged["val/err"], results["best_val"], rel_tol=1e-6)
    return assert_values(logged, PARTS["mlp"].recount(model, "val"), what="metrics.csv")


def cli_none() -> dict:
    """``--trainer.logger=false``: the run gets a folder of its own, printed, with results.json."""
    run = cli("fit", "--trainer.logger=false")
    assert "this run's files go to runs/sparsemlp_digits/version_0" in run.stdout, run.stdout[-800:]
    assert run.folder == run.cwd / "runs" / "sparsemlp_digits" / "version_0"
    return results_recount(run)


def wandb_run_history(run: CliRun) -> dict[str, float]:
    [run_dir] = list(run.cwd.rglob("offline-run-*"))
    offline = finished_offline_run(run_dir, "test/err")  # the CLI's run ends with its process; this one goes on
    assert offline.summary["test/err"] == run.results["test/err"], "the W&B summary is not results.json"
    return {k: v for k, v in offline.history.items() if isinstance(v, (int, float))}


CHECKS.update(
    {
        "log_ours__cli": cli_our_csv,
        "log_csv__cli": functools.partial(
            cli_logger,
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=runs",
            read=lambda run: csv_values(run.folder / "metrics.csv"),
        ),
        "log_tensorboard__cli": functools.partial(
            cli_logger,
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            "--trainer.logger.save_dir=runs",
            read=lambda run: tensorboard_scalars(str(run.folder)),
        ),
        "log_mlflow__cli": lambda: (
            os.environ.update(MLFLOW_FILE_STORE)
            or cli_logger(
                "--trainer.logger=lightning.pytorch.loggers.MLFlowLogger",
                "--trainer.logger.experiment_name=compat",
                "--trainer.logger.tracking_uri=file:./mlruns",
                read=mlflow_run_metrics,
            )
        ),
        "log_wandb__cli": lambda: cli_logger(
            "--config",
            "callbacks/wandb.yaml",
            f"--trainer.logger.save_dir={Path.cwd() / 'runs'}",
            read=wandb_run_history,
        ),
        "log_none__cli": cli_none,
    }
)


def mlflow_run_metrics(run: CliRun) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run.cwd / "mlruns").as_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "compat"]
    [found] = client.search_runs([experiment.experiment_id])
    return dict(found.data.metrics)


def cli_two_monitors() -> dict:
    """A second, named monitor beside the config's: its values under its name, equal to the first's."""
    run = cli(
        "fit",
        "--trainer.callbacks+=lightning_rect.callbacks.SparsityMonitor",
        "--trainer.callbacks.init_args.name=second",
        "--trainer.callbacks.init_args.modules=[encoder.layers.0.activation]",
    )
    values = results_recount(run)
    results = run.results
    assert math.isclose(
        results["test/sparsity/second/encoder.layers.0.activation"], results["test/sparsity/layer_1"], rel_tol=1e-6
    ), results
    return values


def cli_checkpoint_sparsity() -> dict:
    """A config's ModelCheckpoint on val/sparsity/mean (mode max) beside the CLI's own on val/err: it keeps
    the sparsest epoch, whose weights recount to its score."""
    run = cli(
        "fit",
        "--trainer.max_epochs=2",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.init_args.monitor=val/sparsity/mean",
        "--trainer.callbacks.init_args.mode=max",
        "--trainer.callbacks.init_args.filename=sparsest",
    )
    path, score = run.record.checkpoints["val/sparsity/mean"]
    logged = [values["val/sparsity/mean"] for values in run.record.val_metrics]
    assert math.isclose(score, max(logged), rel_tol=1e-6), (score, logged)
    recount = PARTS["mlp"].recount(SparseMLP.load_from_checkpoint(path, map_location="cpu"), "val")
    values = assert_values({"val/sparsity/mean": score}, {"val/sparsity/mean": recount["val/sparsity/mean"]})
    values.update(results_recount(run))
    return values


def cli_early_stopping() -> dict:
    """EarlyStopping from the command line with a threshold every value passes: one epoch of 5."""
    run = cli(
        "fit",
        "--trainer.max_epochs=5",
        "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
        "--trainer.callbacks.init_args.monitor=val/err",
        "--trainer.callbacks.init_args.stopping_threshold=2.0",
    )
    assert run.results["epochs"] == 1, run.results["epochs"]
    return results_recount(run)


CHECKS.update(
    {
        "two_monitors__cli": cli_two_monitors,
        "checkpoint_sparsity__cli": cli_checkpoint_sparsity,
        "early_stopping__cli": cli_early_stopping,
    }
)


def cli_export(how: str) -> dict:
    """The checkpoint the CLI kept, loaded and exported: the export computes what the model computes."""
    model = SparseMLP.load_from_checkpoint(cli_base_run().results["checkpoint"], map_location="cpu").eval()
    x, _ = examples("test")
    with torch.no_grad():
        ours = exported_outputs(how, model, x) if how != "sequential" else as_sequential(PARTS["mlp"], model)(x)
        theirs = model(x)
    assert torch.allclose(ours, theirs, atol=1e-5), f"max difference {(ours - theirs).abs().max().item()}"
    return {"examples": len(x)}


def cli_checkpoint_unpickles_safely() -> dict:
    """The CLI's checkpoints hold tensors and plain values only: they load with ``weights_only=True``."""
    ckpt = cli_base_run().results["checkpoint"]
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = SparseMLP.load_from_checkpoint(ckpt, map_location="cpu")
    assert same_tensors(raw["state_dict"], model.state_dict())
    return {"keys": len(raw)}


for _how in ("torch_export", "jit_trace", "onnx", "sequential"):
    CHECKS[f"{_how}__cli"] = functools.partial(cli_export, _how)
CHECKS["pickle__cli"] = cli_checkpoint_unpickles_safely


# ---- the CLI under DDP -----------------------------------------------------------------------------


def cli_distributed(strategy: str) -> dict:
    """``fit`` on 2 CPU processes: rank 0 writes results.json, whose test values are the kept checkpoint's
    on the whole test split; metrics.csv keeps the fit's rows and the test's."""
    run = cli(
        "fit",
        f"--trainer.strategy={strategy}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        folder=SHARED / f"cli_{strategy}",
    )
    if rank() != 0:
        return {}
    values = results_recount(run)
    with (run.folder / "metrics.csv").open() as file:
        columns = set().union(*[{k for k, v in row.items() if v} for row in csv.DictReader(file)])
    assert {"val/err", "train/loss", "test/err"} <= columns, sorted(columns)
    return values


CHECKS["ddp__cli"] = functools.partial(cli_distributed, "ddp")
CHECKS["ddp_spawn__cli"] = functools.partial(cli_distributed, "ddp_spawn")


# ---- Fabric refusals ---------------------------------------------------------------------------------


def dae_under_fabric() -> dict:
    """StackedDAE's hooks called as Fabric's guide calls them (see ``fabric_loop``)."""
    return fabric_row(PARTS["dae"])


def monitor_under_fabric() -> dict:
    """A SparsityMonitor given to Fabric and called with Fabric's ``call`` (see ``fabric_loop``)."""
    return fabric_row(PARTS["monitor"])


CHECKS["fabric__dae"] = dae_under_fabric
CHECKS["fabric__monitor"] = monitor_under_fabric
