"""``SparseMLP``: the paper's supervised network, an ``Encoder`` plus a softmax output layer.

Plain Lightning: automatic optimization, so learning-rate schedulers, ``configure_optimizers``
overrides, gradient clipping and accumulation work as in any LightningModule. Several validation
or test dataloaders are measured one by one (Lightning's ``/dataloader_idx_N`` names), and
``torch.compile`` compiles the steps once: metric bookkeeping runs eagerly beside the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_rect.checkpoint import MODEL_KEY, load_pretrained_encoder
from lightning_rect.checks import check_non_negative, check_positive
from lightning_rect.encoder import Encoder, dead_fractions, l1_penalty
from lightning_rect.errors import CheckpointError, ConfigError
from lightning_rect.metrics import LossAverage
from lightning_rect.models.batch import labeled_batch, split_batch


#: A pre-trained layer with at least this fraction of dead units is warned about.
DEAD_WARNING = 0.9
#: Checkpoint key: whether the model's encoder already holds the ``pretrained`` weights (or weights
#: trained from them), so a model restored from the checkpoint never reads the pre-training file.
PRETRAINED_LOADED_KEY = "pretrained_loaded"


def warn_dead_pretrained_layers(encoder: Encoder, batches, source: str, reduce=None) -> None:
    """Fine-tuning cannot revive units that never fire: say so when pre-training left a layer (almost) dead."""
    inputs = (split_batch(batch)[0] for batch in batches)
    for k, dead in enumerate(dead_fractions(encoder, inputs, reduce=reduce), start=1):
        if dead >= DEAD_WARNING:
            rank_zero_warn(
                f"pre-trained layer_{k} from {source} has {100 * dead:.1f}% dead units on the training data (0 on "
                "every example); they get no gradient, so fine-tuning cannot revive them: pre-train with a lower "
                "learning rate or l1, or fine-tune without pretrained"
            )


class SparseMLP(LightningModule):
    """Classifier: ``hidden_sizes`` layers of ``activation`` units, softmax output, NLL + L1 loss.

    Args:
        in_features: input size (LightningCLI links it from ``data.input_size``); inputs of any
            shape are flattened per example, so (N, 1, 28, 28) batches need ``in_features=784``.
        num_classes: number of classes (linked from ``data.num_classes``).
        hidden_sizes: units per hidden layer; the paper uses 3 x 1000 (NORB: 4000, 2000).
        activation: registry name: rectifier, tanh, softplus, sigmoid, sharp_softplus, or a plugin's.
        activation_args: keyword arguments of the activation, e.g. ``{a: 3}`` for sharp_softplus.
        sign_flip: multiply half of each layer's outputs by -1 (the paper's symmetry trick).
        l1: coefficient of the L1 penalty on hidden activations (the paper: 0.001).
        lr: learning rate, constant (the paper picks it from {0.1, 0.01, 0.001, 0.0001}).
        optimizer: ``sgd`` (the paper) or ``adam``.
        momentum: SGD momentum (the paper: 0).
        pretrained: path to a ``StackedDAE`` checkpoint whose encoder weights the model starts
            from. Read once, at the model's first ``fit``, ``validate``, ``test`` or ``predict``
            (after Lightning restored any ``ckpt_path``), or by ``load_pretrained()``. A model whose
            weights come from a checkpoint of this model (``load_from_checkpoint``, ``ckpt_path``)
            already holds them: it never reads the pre-training file again, so loading, resuming,
            fitting again, testing or predicting from it never needs that file.
    """

    selection_metric = "val/err"

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden_sizes: Sequence[int] = (1000, 1000, 1000),
                 activation: str = "rectifier", activation_args: dict | None = None, sign_flip: bool = False,
                 l1: float = 0.001, lr: float = 0.01, optimizer: Literal["sgd", "adam"] = "sgd",
                 momentum: float = 0.0, pretrained: str | None = None) -> None:
        super().__init__()
        check_non_negative("l1", l1)
        check_positive("lr", lr)
        check_non_negative("momentum", momentum)
        check_num_classes(num_classes)
        self.save_hyperparameters()
        self.encoder = Encoder(in_features, list(hidden_sizes), activation, activation_args, sign_flip)
        self.head = nn.Linear(self.encoder.hidden_sizes[-1], num_classes)
        self.l1 = float(l1)
        self.train_loss = LossAverage()
        #: one set of evaluation metrics per validation / test dataloader (one set until there are more)
        self.eval_metrics = nn.ModuleList([self.evaluation_metrics()])
        #: whether the encoder holds the ``pretrained`` weights (or weights trained from them)
        self.pretrained_loaded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities."""
        return F.log_softmax(self.head(self.encoder(x)[-1]), dim=-1)

    def sparsity_modules(self) -> list[nn.Module]:
        """The hidden layers' activations, in order: what ``SparsityMonitor`` logs as ``layer_<k>``."""
        return self.encoder.activation_modules()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL + L1 loss, logits) of one batch."""
        hidden = self.encoder(x)
        logits = self.head(hidden[-1])
        loss = F.cross_entropy(logits, y)
        if self.l1:
            loss = loss + self.l1 * l1_penalty(hidden)
        return loss, logits

    # -- the pre-trained encoder, read once ------------------------------------------------------
    def load_pretrained(self) -> None:
        """Copy the encoder weights of the ``pretrained`` StackedDAE checkpoint into this model."""
        load_pretrained_encoder(self.encoder, self.hparams.pretrained, activation=self.hparams.activation)
        self.pretrained_loaded = True

    def _start_from_pretrained(self) -> None:
        # Called at the start of every stage, after Lightning restored any ``ckpt_path`` (which sets
        # ``pretrained_loaded``): only a model that never held the pre-trained weights reads them.
        if not self.hparams.pretrained or self.pretrained_loaded:
            return
        self.load_pretrained()
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.trainer.state.fn == TrainerFn.FITTING and datamodule is not None:
            warn_dead_pretrained_layers(self.encoder, datamodule.train_dataloader(), self.hparams.pretrained,
                                        reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))

    def on_fit_start(self) -> None:
        # Strategies that restore the checkpoint after this hook (DeepSpeed) load in the next one.
        if not self.trainer.strategy.restore_checkpoint_after_setup:
            self._start_from_pretrained()

    def on_train_start(self) -> None:
        self._start_from_pretrained()

    def on_validation_start(self) -> None:
        self._start_from_pretrained()

    def on_test_start(self) -> None:
        self._start_from_pretrained()

    def on_predict_start(self) -> None:
        self._start_from_pretrained()

    # -- training ------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(*labeled_batch(batch, type(self).__name__))
        self.train_loss.add(loss)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_loss.steps:
            self.log("train/loss", self.train_loss.pop(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr)
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum)

    # -- evaluation: one set of metrics per dataloader ---------------------------------------------
    def evaluation_metrics(self) -> nn.ModuleDict:
        """A fresh set of the metrics of one evaluation dataloader (subclasses add theirs)."""
        return nn.ModuleDict({"loss": MeanMetric(),
                              "accuracy": MulticlassAccuracy(self.hparams.num_classes, average="micro")})

    @torch.compiler.disable  # metric state is Python bookkeeping: traced, it would recompile every step
    def update_evaluation_metrics(self, metrics: nn.ModuleDict, loss: torch.Tensor, logits: torch.Tensor,
                                  y: torch.Tensor) -> None:
        metrics["loss"].update(loss, weight=len(y))
        metrics["accuracy"].update(logits, y)

    def evaluation_values(self, metrics: nn.ModuleDict) -> dict[str, torch.Tensor]:
        """The logged values (``loss``, ``err``, ...) of one dataloader's metrics at the epoch's end."""
        return {"loss": metrics["loss"].compute(), "err": 1.0 - metrics["accuracy"].compute()}

    def _eval_step(self, batch, dataloader_idx: int | None = None) -> torch.Tensor:
        """Update the metrics of the batch's dataloader; returns the logits."""
        x, y = labeled_batch(batch, type(self).__name__)
        loss, logits = self.loss(x, y)
        self.update_evaluation_metrics(self.eval_metrics[dataloader_idx or 0], loss, logits, y)
        return logits

    def _eval_batches(self, stage: str) -> list:
        """Batches of each of the stage's dataloaders (one entry per dataloader)."""
        return list(self.trainer.num_test_batches if stage == "test" else self.trainer.num_val_batches)

    def _start_eval(self, stage: str) -> None:
        for _ in range(len(self.eval_metrics), len(self._eval_batches(stage))):
            self.eval_metrics.append(self.evaluation_metrics().to(self.device))

    def _log_eval(self, stage: str) -> None:
        batches = self._eval_batches(stage)
        for index, metrics in enumerate(self.eval_metrics[:len(batches)]):
            if not batches[index]:
                continue
            # Lightning's names for several dataloaders; one dataloader keeps the plain names.
            suffix = f"/dataloader_idx_{index}" if len(batches) > 1 else ""
            values = {f"{stage}/{name}{suffix}": value for name, value in self.evaluation_values(metrics).items()}
            # compute() already reduces over DDP ranks; sync_dist only silences Lightning's warning.
            self.log_dict(values, prog_bar=stage == "val", sync_dist=True, add_dataloader_idx=False)
            for metric in metrics.values():
                metric.reset()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int | None = None) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch, batch_idx: int, dataloader_idx: int | None = None) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Predicted classes; batches may be ``(x, y)`` or bare ``x``."""
        return self(split_batch(batch)[0]).argmax(dim=-1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[MODEL_KEY] = type(self).__name__
        checkpoint[PRETRAINED_LOADED_KEY] = self.pretrained_loaded

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Before the weights are loaded: a pre-training checkpoint has no output layer to load.
        if checkpoint.get(MODEL_KEY) == "StackedDAE":
            raise CheckpointError(
                f"this is a StackedDAE (pre-training) checkpoint, not a {type(self).__name__} one; fine-tune from it "
                f"with {type(self).__name__}(..., pretrained=<that .ckpt>), or load it with "
                "StackedDAE.load_from_checkpoint (its encoder alone: StackedDAE.load_encoder)"
            )
        # Its weights were trained from the pre-trained ones (every checkpoint before this key was a fit's).
        self.pretrained_loaded = bool(checkpoint.get(PRETRAINED_LOADED_KEY, True))


def check_num_classes(num_classes: object) -> None:
    if isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1:
        return
    hint = (" (a StackedDAE checkpoint records none: fine-tune from it with SparseMLP(..., pretrained=<that .ckpt>), "
            "or load it with StackedDAE.load_from_checkpoint)" if num_classes is None else "")
    raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}{hint}")
