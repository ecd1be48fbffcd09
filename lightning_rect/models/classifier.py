"""``SparseMLP``: the paper's supervised network, an ``Encoder`` plus a softmax output layer.

Plain Lightning: automatic optimization, so learning-rate schedulers, ``configure_optimizers``
overrides, gradient clipping and accumulation work as in any LightningModule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_rect.checkpoint import MODEL_KEY, load_pretrained_encoder
from lightning_rect.checks import check_non_negative, check_positive
from lightning_rect.encoder import Encoder, dead_fractions, l1_penalty
from lightning_rect.metrics import LossAverage
from lightning_rect.models.batch import labeled_batch, split_batch


#: A pre-trained layer with at least this fraction of dead units is warned about.
DEAD_WARNING = 0.9


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
        pretrained: path to a ``StackedDAE`` checkpoint whose encoder weights a *new* training
            starts from. Read when ``fit`` starts without ``ckpt_path`` (``on_fit_start``); a checkpoint of this model
            already holds the fine-tuned weights, so loading, resuming, testing or predicting from
            it never needs the pre-training file.
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
        self.save_hyperparameters()
        self.encoder = Encoder(in_features, list(hidden_sizes), activation, activation_args, sign_flip)
        self.head = nn.Linear(self.encoder.hidden_sizes[-1], num_classes)
        self.l1 = float(l1)
        self.train_loss = LossAverage()
        self.eval_loss = MeanMetric()
        self.eval_accuracy = MulticlassAccuracy(num_classes, average="micro")

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

    # -- training ------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # By now Lightning has restored any checkpoint it was given (``trainer.ckpt_path``): only a
        # fit from scratch starts from the pre-trained encoder.
        if self.hparams.pretrained and self.trainer.ckpt_path is None:
            self.load_pretrained()
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is not None:
                warn_dead_pretrained_layers(self.encoder, datamodule.train_dataloader(), self.hparams.pretrained,
                                            reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))

    def load_pretrained(self) -> None:
        """Copy the encoder weights of the ``pretrained`` StackedDAE checkpoint into this model."""
        load_pretrained_encoder(self.encoder, self.hparams.pretrained, activation=self.hparams.activation)

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

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, batch) -> torch.Tensor:
        """Update the evaluation metrics; returns the logits for subclasses that measure more."""
        x, y = labeled_batch(batch, type(self).__name__)
        loss, logits = self.loss(x, y)
        self.eval_loss.update(loss, weight=len(y))
        self.eval_accuracy.update(logits, y)
        return logits

    def _log_eval(self, stage: str) -> None:
        # compute() already reduces over DDP ranks; sync_dist only silences Lightning's warning.
        self.log_dict({f"{stage}/loss": self.eval_loss.compute(), f"{stage}/err": 1.0 - self.eval_accuracy.compute()},
                      prog_bar=stage == "val", sync_dist=True)
        self.eval_loss.reset()
        self.eval_accuracy.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Predicted classes; batches may be ``(x, y)`` or bare ``x``."""
        return self(split_batch(batch)[0]).argmax(dim=-1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[MODEL_KEY] = type(self).__name__
