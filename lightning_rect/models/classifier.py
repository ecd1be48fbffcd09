"""``SparseMLP``: the paper's supervised network, an ``Encoder`` plus a softmax output layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_rect.checkpoints import MODEL_KEY, load_pretrained_encoder
from lightning_rect.checks import check_non_negative, check_positive
from lightning_rect.encoder import Encoder, l1_penalty
from lightning_rect.metrics import ExactSparsity, LossAverage
from lightning_rect.models.signature import precomputed_signature


class SparseMLP(LightningModule):
    """Classifier: ``hidden_sizes`` layers of ``activation`` units, softmax output, NLL + L1 loss.

    Args:
        in_features: input size (LightningCLI links it from ``data.input_size``).
        num_classes: number of classes (linked from ``data.num_classes``).
        hidden_sizes: units per hidden layer; the paper uses 3 x 1000 (NORB: 4000, 2000).
        activation: registry name: rectifier, tanh, softplus, sigmoid, sharp_softplus, or a plugin's.
        activation_args: keyword arguments of the activation, e.g. ``{a: 3}`` for sharp_softplus.
        sign_flip: multiply half of each layer's outputs by -1 (the paper's symmetry trick).
        l1: coefficient of the L1 penalty on hidden activations (the paper: 0.001).
        lr: learning rate, constant (the paper picks it from {0.1, 0.01, 0.001, 0.0001}).
        optimizer: ``sgd`` (the paper) or ``adam``.
        momentum: SGD momentum (the paper: 0).
        pretrained: path to a ``StackedDAE`` checkpoint whose encoder weights to start from.
        compile: run the loss computation (encoder, head, NLL, L1) through ``torch.compile``. Off by
            default: on 2 CPU cores it measured within 2% of eager without the SparsityMonitor, and
            20-35% slower with it, whose hooks split the graph (``benchmarks/throughput.py --compile``).
    """

    selection_metric = "val/err"

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden_sizes: Sequence[int] = (1000, 1000, 1000),
                 activation: str = "rectifier", activation_args: dict | None = None, sign_flip: bool = False,
                 l1: float = 0.001, lr: float = 0.01, optimizer: Literal["sgd", "adam"] = "sgd",
                 momentum: float = 0.0, pretrained: str | None = None, compile: bool = False) -> None:
        super().__init__()
        check_non_negative("l1", l1)
        check_positive("lr", lr)
        self.save_hyperparameters()
        self._automatic_choice: bool | None = None  # see automatic_optimization
        self.encoder = Encoder(in_features, list(hidden_sizes), activation, activation_args, sign_flip)
        self.head = nn.Linear(self.encoder.hidden_sizes[-1], num_classes)
        self.l1 = float(l1)
        self.train_loss = LossAverage()
        self.eval_loss = MeanMetric()
        self.eval_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.eval_sparsity = ExactSparsity()
        if pretrained:
            load_pretrained_encoder(self.encoder, pretrained, activation=activation)
        if compile:
            # an instance attribute shadowing the method: the weights and their names stay as they are
            self._loss = torch.compile(self._loss)

    def __setattr__(self, name: str, value) -> None:
        # Lightning notes the running hook's name on the module around each of the ~25 hook calls of
        # a training step; nn.Module.__setattr__ checks parameters, buffers and submodules every time
        # (1 us each, about 1% of a step at minibatch 10). A str is none of those: store it directly.
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities."""
        return F.log_softmax(self.head(self.encoder(x)[-1]), dim=-1)

    def sparsity_modules(self) -> list[nn.Module]:
        return self.encoder.activation_modules()

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        hidden = self.encoder(x)
        logits = self.head(hidden[-1])
        loss = F.cross_entropy(logits, y)
        if self.l1:
            loss = loss + self.l1 * l1_penalty(hidden)
        return loss, logits, hidden

    @property
    def automatic_optimization(self) -> bool:
        """False unless the Trainer clips gradients or accumulates batches: then Lightning's
        automatic loop runs, since only it implements those. Otherwise ``training_step`` steps the
        optimizer itself (Lightning's manual optimization, same SGD update): at the paper's minibatch
        of 10 the automatic loop's closure and extra hooks cost about 3% of the throughput.
        Assigning a value (as ``LightningModule`` allows) overrides the choice.
        """
        if self._automatic_choice is not None:
            return self._automatic_choice
        trainer = self._trainer
        return trainer is not None and (bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches > 1)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_choice = bool(value)

    @precomputed_signature
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(*batch)
        self.train_loss.add(loss)
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_loss.steps:
            self.log("train/loss", self.train_loss.pop(), prog_bar=True, sync_dist=True)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Update the evaluation metrics; returns the logits for subclasses that measure more."""
        x, y = batch
        loss, logits, hidden = self._loss(x, y)
        self.eval_loss.update(loss, weight=len(y))
        self.eval_accuracy.update(logits, y)
        for h in hidden:
            self.eval_sparsity.update(h)
        return logits

    def _log_eval(self, stage: str) -> None:
        # Each metric's compute() already reduces over DDP ranks.
        self.log_dict(
            {
                f"{stage}/loss": self.eval_loss.compute(),
                f"{stage}/err": 1.0 - self.eval_accuracy.compute(),
                f"{stage}/sparsity": self.eval_sparsity.compute(),
            },
            prog_bar=stage == "val",
            sync_dist=True,
        )
        for metric in (self.eval_loss, self.eval_accuracy, self.eval_sparsity):
            metric.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch[0]).argmax(dim=-1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[MODEL_KEY] = type(self).__name__

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr)
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum)

