"""The compatibility matrix, declared once: each row one Lightning contract, each column one part of
this package, each cell its expected outcome and the check that asserts it (``cells.py``).

An outcome is ``works`` (the check asserted its values: logged sparsity equal to a recount, an error
equal to a recount with the returned weights, the same batches each epoch, ...) or ``refused: <the
one-line message the library gives>`` (the check met exactly that refusal; where the message names
another way, the check runs that too). A cell whose check needs an optional package (``needs``)
reports ``needs <package>`` where that package is not installed, and the test expects exactly that.

``python -m tests.compat.matrix --markdown`` prints the README's table (a test keeps them equal).
Importing this module imports nothing heavy: the README test and the runners read it.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

WORKS = "works"


@dataclass(frozen=True)
class Column:
    id: str
    title: str  #: the README's column heading


@dataclass(frozen=True)
class Row:
    id: str
    group: str  #: strategy, entry point, Trainer flag, logger, callback, export, copies
    title: str  #: the README's row heading (markdown)
    launch: str = "single"  #: which runner runs its cells: single (one process), spawn (ddp_spawn), ddp
    needs: str | None = None  #: an optional package its checks need (module name = package name here)


COLUMNS = [
    Column("mlp", "`SparseMLP`"),
    Column("dae", "`StackedDAE`"),
    Column("handoff", "`SparseMLP(pretrained=<DAE .ckpt>)`"),
    Column("monitor", "`SparsityMonitor` on your model"),
    Column("cli", "CLI (`lightning-rect`)"),
]

ROWS = [
    # strategies (CPU processes: accelerator="cpu")
    Row("single", "strategy", 'one process: fit, then test `ckpt_path="best"`'),
    Row("ddp", "strategy", "`ddp`, 2 processes", launch="ddp"),
    Row("ddp_spawn", "strategy", "`ddp_spawn`, 2 processes", launch="spawn"),
    # entry points
    Row("fit", "entry point", "`Trainer.fit` (CLI: `fit`)"),
    Row("validate", "entry point", "`Trainer.validate` (CLI: `validate --ckpt_path`)"),
    Row("test", "entry point", "`Trainer.test` (CLI: `test --ckpt_path`)"),
    Row("predict", "entry point", "`Trainer.predict` (CLI: `predict --ckpt_path`)"),
    Row("lightning_cli", "entry point", "`LightningCLI` `fit` and `test` (CLI: `RectCLI` in your script)"),
    Row("fabric", "entry point", "a `Fabric` loop (CLI: the model and data of a config, `RectCLI(run=False)`)"),
    # Trainer flags
    Row("fast_dev_run", "Trainer flag", "`fast_dev_run`"),
    Row("overfit_batches", "Trainer flag", "`overfit_batches=2`"),
    Row("limit_batches", "Trainer flag", "`limit_train_batches=3`, `limit_val_batches=0.5`"),
    Row("limit_train_0", "Trainer flag", "`limit_train_batches=0`"),
    Row("limit_val_0", "Trainer flag", "`limit_val_batches=0`"),
    Row("val_check_interval", "Trainer flag", "`val_check_interval=0.5`"),
    Row("check_val_every_n_epoch", "Trainer flag", "`check_val_every_n_epoch=2`"),
    Row("no_sanity", "Trainer flag", "`num_sanity_val_steps=0`"),
    Row("accumulate", "Trainer flag", "`accumulate_grad_batches=2`"),
    Row("clip", "Trainer flag", "`gradient_clip_val`"),
    Row("bf16", "Trainer flag", '`precision="bf16-mixed"`'),
    Row("deterministic", "Trainer flag", "`deterministic=True`"),
    # loggers
    Row("log_ours", "logger", "our `CSVLogger` (`lightning_rect.app.loggers`)"),
    Row("log_csv", "logger", "Lightning's `CSVLogger`"),
    Row("log_tensorboard", "logger", "`TensorBoardLogger`", needs="tensorboard"),
    Row("log_mlflow", "logger", "`MLFlowLogger`, file store", needs="mlflow"),
    Row("log_wandb", "logger", "`WandbLogger`, `WANDB_MODE=offline`"),
    Row("log_none", "logger", "`logger=False`"),
    # callbacks beside ours
    Row("two_monitors", "callback", "two `SparsityMonitor(name=...)`"),
    Row("checkpoint_sparsity", "callback", '`ModelCheckpoint(monitor="val/sparsity/mean", mode="max")`'),
    Row("early_stopping", "callback", "`EarlyStopping`"),
    # taking the network out (CLI: the checkpoint it wrote)
    Row("torch_export", "export", "`torch.export.export`"),
    Row("jit_trace", "export", '`to_torchscript(method="trace")` (`torch.jit.trace`)'),
    Row("onnx", "export", "`torch.onnx.export(dynamo=False)`", needs="onnx"),
    Row("sequential", "export", "a plain `nn.Sequential`"),
    # copies
    Row("pickle", "copies", "`pickle`, `copy.deepcopy` mid-fit (CLI: its checkpoint, `weights_only=True`)"),
]

#: The one-line refusals, as the library words them. Where one names another way, the check runs it.
DAE_UNDER_DDP = (
    "StackedDAE trains one layer per step, so under DDP the other layers get no gradient; use "
    'strategy="ddp_find_unused_parameters_true" (CLI: --trainer.strategy=ddp_find_unused_parameters_true, '
    "configs/presets/ddp_pretrain.yaml)"
)
NO_TRAINING_STEP = (
    "the fit ran no training step (see trainer.limit_train_batches, max_steps, max_time), so there "
    "is no result to record; no results.json was written"
)
DAE_UNDER_FABRIC = (
    "StackedDAE trains greedily on a Trainer's epochs (they pick the layer and end the schedule), "
    "which Fabric does not run; pre-train it with lightning.Trainer().fit, then use its encoder "
    "under Fabric: SparseMLP(pretrained=<checkpoint>) or StackedDAE.load_encoder(<checkpoint>)"
)
MONITOR_UNDER_FABRIC = (
    "SparsityMonitor is a lightning.Trainer callback (it counts during the Trainer's stages and "
    "logs through it), and Fabric runs no stages; fit with lightning.Trainer(callbacks="
    "[SparsityMonitor(...)]), or count your activations' exact zeros in your Fabric loop"
)

REFUSED = {
    ("ddp", "dae"): DAE_UNDER_DDP,
    ("ddp_spawn", "dae"): DAE_UNDER_DDP,
    ("limit_train_0", "cli"): NO_TRAINING_STEP,
    ("fabric", "dae"): DAE_UNDER_FABRIC,
    ("fabric", "monitor"): MONITOR_UNDER_FABRIC,
}


@dataclass(frozen=True)
class Cell:
    row: Row
    column: Column
    expected: str  #: "works" or "refused: <message>"

    @property
    def id(self) -> str:
        return f"{self.row.id}/{self.column.id}"

    @property
    def check(self) -> str:
        """The name of its check in ``cells.py``."""
        return f"{self.row.id}__{self.column.id}"

    def expected_here(self) -> str:
        """What the runner must report in this environment: ``needs <package>`` where the row's
        optional package is not installed, else the declared outcome."""
        if self.row.needs and importlib.util.find_spec(self.row.needs) is None:
            return f"needs {self.row.needs}"
        return self.expected


CELLS = [
    Cell(row, column, f"refused: {REFUSED[row.id, column.id]}" if (row.id, column.id) in REFUSED else WORKS)
    for row in ROWS
    for column in COLUMNS
]
BY_ID = {cell.id: cell for cell in CELLS}


def cells_of(launch: str) -> list[Cell]:
    return [cell for cell in CELLS if cell.row.launch == launch]


def markdown() -> str:
    """The README's table: one line per row, then the refusals, numbered."""
    notes: list[str] = []
    lines = ["| | contract | " + " | ".join(c.title for c in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for row in ROWS:
        texts = []
        for column in COLUMNS:
            cell = BY_ID[f"{row.id}/{column.id}"]
            if cell.expected == WORKS:
                texts.append("works")
                continue
            message = cell.expected.removeprefix("refused: ")
            if message not in notes:
                notes.append(message)
            texts.append(f"refused ({notes.index(message) + 1})")
        needs = f" (needs `{row.needs}`)" if row.needs else ""
        lines.append(f"| {row.group} | {row.title}{needs} | " + " | ".join(texts) + " |")
    lines.append("")
    lines += [f"{n}. Refused with: `{message}`" for n, message in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m tests.compat.matrix --markdown")
    sys.stdout.write(markdown())
