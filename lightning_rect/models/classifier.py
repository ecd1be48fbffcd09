"""``SparseMLP``: the paper's supervised network, an ``Encoder`` plus a softmax output layer.

Plain Lightning: automatic optimization, so learning-rate schedulers, ``configure_optimizers``
overrides, gradient clipping and accumulation work as in any LightningModule. Several validation
or test dataloaders are measured one by one (Lightning's ``/dataloader_idx_N`` names), and
``torch.compile`` compiles the steps once: metric bookkeeping runs eagerly beside the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

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
from lightning_rect.fused_sgd import FusedSGDBinding, InPlaceSGD, check_trainer, fused_linear
from lightning_rect.metrics import LossAverage, as_metric
from lightning_rect.models.batch import labeled_batch, split_batch

#: A pre-trained layer with at least this fraction of dead units is warned about.
DEAD_WARNING = 0.9
#: ``state_dict`` key (a bool buffer): whether the model's encoder already holds the ``pretrained``
#: weights (or weights trained from them). In the state, it travels wherever the weights go: checkpoints,
#: the weights ``ddp_spawn`` returns to the main process, ``load_state_dict``. So a model restored from
#: them never reads the pre-training file again. Checkpoints of older versions held it as a top-level key.
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


class SparseMLP(FusedSGDBinding, LightningModule):
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
            (after Lightning restored any ``ckpt_path``); outside a Trainer (Fabric, plain PyTorch) at
            its first ``forward`` or step; or by ``load_pretrained()``. Whether the weights hold it is
            part of the ``state_dict`` (``pretrained_loaded``): a model whose weights come from this
            model's (``load_from_checkpoint``, ``ckpt_path``, ``load_state_dict``, the weights a
            ``ddp_spawn`` fit returns) never reads the pre-training file again, so loading, resuming,
            fitting again, testing or predicting from it never needs that file.
        fused_sgd: apply plain SGD inside backward, in place, to every Linear layer (hidden and
            softmax), with the optimizer's current learning rate: the same training as the default
            path, faster at small minibatches (no gradient tensors; see ``lightning_rect.fused_sgd``
            and benchmarks/README.md). Under ``Trainer.fit`` only. Refused where the update would
            differ from plain SGD's: with this model's own ``momentum`` or ``optimizer: adam`` when it
            is built; at the start of fit for weight decay or another optimizer of a subclass, several
            devices, gradient accumulation or clipping, a precision other than 32-true or 64-true. The
            fused weights' ``.grad`` stays ``None``.

    Built on the ``lightning`` package: run it with ``lightning.Trainer`` or ``lightning.Fabric``
    (a ``pytorch_lightning.Trainer`` refuses it as not a LightningModule). Under Fabric, call the
    hooks as Fabric's guide does (``on_validation_epoch_start``, ``validation_step``,
    ``on_validation_epoch_end``, ...); they log through ``fabric.log_dict``.
    """

    selection_metric = "val/err"

    if TYPE_CHECKING:  # the buffer registered in __init__, declared for type checkers
        pretrained_loaded: torch.Tensor

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden_sizes: Sequence[int] = (1000, 1000, 1000),
        activation: str = "rectifier",
        activation_args: dict | None = None,
        sign_flip: bool = False,
        l1: float = 0.001,
        lr: float = 0.01,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: float = 0.0,
        pretrained: str | None = None,
        fused_sgd: bool = False,
    ) -> None:
        super().__init__()
        check_non_negative("l1", l1)
        check_positive("lr", lr)
        check_non_negative("momentum", momentum)
        check_num_classes(num_classes)
        if fused_sgd and type(self).configure_optimizers is SparseMLP.configure_optimizers:
            # refused here, before any Trainer: fused_sgd's own check at fit start would come after the summary
            wanted = f"optimizer={optimizer}" if optimizer != "sgd" else f"momentum={momentum}" if momentum else None
            if wanted:
                raise ConfigError(
                    f"fused_sgd performs plain SGD only, and {wanted} asks for another update; "
                    "set optimizer: sgd and momentum: 0, or fused_sgd: false"
                )
        self.save_hyperparameters()
        self.encoder: Encoder = Encoder(in_features, list(hidden_sizes), activation, activation_args, sign_flip)
        self.head = nn.Linear(self.encoder.hidden_sizes[-1], num_classes)
        self.l1 = float(l1)
        #: the optimizer binding of the fused layers, while a fit with ``fused_sgd`` runs
        self._fused: InPlaceSGD | None = None
        self.train_loss = LossAverage()
        #: one set of evaluation metrics per validation / test dataloader (one set until there are more)
        self.eval_metrics = nn.ModuleList([self.evaluation_metrics()])
        #: whether the encoder holds the ``pretrained`` weights (or weights trained from them); in the
        #: state_dict, so it comes back with the weights wherever they come from (see PRETRAINED_LOADED_KEY)
        self.register_buffer(PRETRAINED_LOADED_KEY, torch.tensor(False))
        # Python-side "already checked": the first use outside a Trainer tests the buffer once, not every
        # step (a host sync on GPU); any load_state_dict makes the next use check again.
        self._pretrained_checked = not pretrained
        self.register_load_state_dict_pre_hook(_state_without_loaded_flag)
        self.register_load_state_dict_post_hook(_recheck_pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities."""
        if not torch.jit.is_scripting():  # a scripted copy is made from weights already in place
            self._pretrained_before_first_use()
        return F.log_softmax(self.head(self.encoder(x)[-1]), dim=-1)

    def sparsity_modules(self) -> list[nn.Module]:
        """The hidden layers' activations, in order: what ``SparsityMonitor`` logs as ``layer_<k>``."""
        return self.encoder.activation_modules()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL + L1 loss, logits) of one batch."""
        self._pretrained_before_first_use()
        hidden = self.encoder(x)
        logits = fused_linear(self.head, hidden[-1], self._fused)
        loss = F.cross_entropy(logits, y)
        if self.l1:
            loss = loss + self.l1 * l1_penalty(hidden)
        return loss, logits

    # -- the pre-trained encoder, read once ------------------------------------------------------
    def load_pretrained(self) -> None:
        """Copy the encoder weights of the ``pretrained`` StackedDAE checkpoint into this model."""
        load_pretrained_encoder(self.encoder, self.hparams["pretrained"], activation=self.hparams["activation"])
        self.pretrained_loaded.fill_(True)  # in place: the buffer DDP and the optimizer's model hold
        self._pretrained_checked = True

    def _start_from_pretrained(self) -> None:
        # Called at the start of every stage, after Lightning restored any ``ckpt_path`` (which sets
        # ``pretrained_loaded``): only a model that never held the pre-trained weights reads them.
        self._pretrained_checked = True
        if not self.hparams["pretrained"] or self.pretrained_loaded:
            return
        self.load_pretrained()
        trainer = self._running_trainer()
        datamodule = getattr(trainer, "datamodule", None)
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING and datamodule is not None:
            warn_dead_pretrained_layers(
                self.encoder,
                datamodule.train_dataloader(),
                self.hparams["pretrained"],
                reduce=lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
            )

    def _pretrained_before_first_use(self) -> None:
        # Outside a Trainer (Fabric, plain PyTorch) no stage hook may run: the first forward or step
        # loads the pre-trained weights. Under a Trainer its stage hooks do, after restoring ckpt_path.
        if not self._pretrained_checked and self._running_trainer() is None:
            self._start_from_pretrained()

    def _running_trainer(self):
        """The Trainer running this model, or None: plain PyTorch, or Fabric (whose ``self.trainer``
        stands in for a Trainer but has no loops, ``state`` or batch counts)."""
        if self.fabric is not None:
            return None
        try:
            return self.trainer
        except RuntimeError:  # "not attached to a Trainer"
            return None

    def on_fit_start(self) -> None:
        trainer = self._running_trainer()
        if self.hparams["fused_sgd"] and trainer is not None:
            linears = [layer.linear for layer in self.encoder.hidden_layers()] + [self.head]
            self._bind_fused_sgd(check_trainer(self, (p for linear in linears for p in linear.parameters())))
        # Strategies that restore the checkpoint after this hook (DeepSpeed) load in the next one.
        if trainer is None or not trainer.strategy.restore_checkpoint_after_setup:
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
        if hp["optimizer"] == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp["lr"])
        return torch.optim.SGD(self.parameters(), lr=hp["lr"], momentum=hp["momentum"])

    # -- evaluation: one set of metrics per dataloader ---------------------------------------------
    def evaluation_metrics(self) -> nn.ModuleDict:
        """A fresh set of the metrics of one evaluation dataloader (subclasses add theirs)."""
        return nn.ModuleDict(
            {"loss": MeanMetric(), "accuracy": MulticlassAccuracy(self.hparams["num_classes"], average="micro")}
        )

    @torch.compiler.disable  # metric state is Python bookkeeping: traced, it would recompile every step
    def update_evaluation_metrics(
        self, metrics: nn.ModuleDict, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        as_metric(metrics["loss"]).update(loss, weight=len(y))
        as_metric(metrics["accuracy"]).update(logits, y)

    def evaluation_values(self, metrics: nn.ModuleDict) -> dict[str, torch.Tensor]:
        """The logged values (``loss``, ``err``, ...) of one dataloader's metrics at the epoch's end."""
        return {"loss": as_metric(metrics["loss"]).compute(), "err": 1.0 - as_metric(metrics["accuracy"]).compute()}

    def _eval_step(self, batch, dataloader_idx: int | None = None) -> torch.Tensor:
        """Update the metrics of the batch's dataloader; returns the logits."""
        x, y = labeled_batch(batch, type(self).__name__)
        loss, logits = self.loss(x, y)
        index = dataloader_idx or 0
        if index >= len(self.eval_metrics):  # outside a Trainer nobody announced the dataloaders
            self._add_eval_metrics(index + 1)
        self.update_evaluation_metrics(self.eval_metrics[index], loss, logits, y)
        return logits

    def _eval_batches(self, stage: str) -> list:
        """Batches of each of the stage's dataloaders (one entry per dataloader). Outside a Trainer,
        whether each set of metrics was updated since its last reset: the dataloaders the steps saw."""
        trainer = self._running_trainer()
        if trainer is None:
            return [as_metric(metrics["loss"]).update_called for metrics in self._metric_sets()]
        return list(trainer.num_test_batches if stage == "test" else trainer.num_val_batches)

    def _metric_sets(self) -> list[nn.ModuleDict]:
        """``eval_metrics`` as the ``nn.ModuleDict``s they are (``nn.ModuleList`` types its items as ``nn.Module``)."""
        return [metrics for metrics in self.eval_metrics if isinstance(metrics, nn.ModuleDict)]

    def _add_eval_metrics(self, count: int) -> None:
        for _ in range(len(self.eval_metrics), count):
            self.eval_metrics.append(self.evaluation_metrics().to(self.device))

    def _start_eval(self, stage: str) -> None:
        if self._running_trainer() is not None:
            self._add_eval_metrics(len(self._eval_batches(stage)))

    def evaluation_results(self, stage: str = "val") -> dict[str, torch.Tensor]:
        """The ``<stage>/<name>`` values (``val/err``, ``val/loss``, ...) of each dataloader measured since
        the last call, named as they are logged; the metrics are reset. What ``on_<stage>_epoch_end``
        logs, for a loop of one's own."""
        batches = self._eval_batches(stage)
        results = {}
        for index, metrics in enumerate(self._metric_sets()[: len(batches)]):
            if not batches[index]:
                continue
            # Lightning's names for several dataloaders; one dataloader keeps the plain names.
            suffix = f"/dataloader_idx_{index}" if len(batches) > 1 else ""
            values = self.evaluation_values(metrics)
            results.update({f"{stage}/{name}{suffix}": value for name, value in values.items()})
            for metric in metrics.values():  # a subclass's may be any module with reset(), a MetricCollection too
                metric.reset()  # type: ignore[operator]  # nn.ModuleDict types its values as nn.Module
        return results

    def _log_eval(self, stage: str) -> None:
        if self.fabric is None and self._running_trainer() is None:
            hook = f"on_{'validation' if stage == 'val' else stage}_epoch_end"
            raise RuntimeError(
                f"{type(self).__name__}.{hook} logs through a Trainer or Fabric and neither runs this model; call "
                f"fabric.setup(model) first, or read the values with model.evaluation_results({stage!r})"
            )
        values = self.evaluation_results(stage)
        if values:
            # compute() already reduces over DDP ranks; sync_dist only silences Lightning's warning.
            self.log_dict(values, prog_bar=stage == "val", sync_dist=True, add_dataloader_idx=False)

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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Before the weights are loaded: a pre-training checkpoint has no output layer to load.
        if checkpoint.get(MODEL_KEY) == "StackedDAE":
            raise CheckpointError(
                f"this is a StackedDAE (pre-training) checkpoint, not a {type(self).__name__} one; fine-tune from it "
                f"with {type(self).__name__}(..., pretrained=<that .ckpt>), or load it with "
                "StackedDAE.load_from_checkpoint (its encoder alone: StackedDAE.load_encoder)"
            )
        # A checkpoint of an older version: the flag was a top-level key (absent: every such checkpoint
        # was a fit's, so its weights were trained from the pre-trained ones).
        state = checkpoint.get("state_dict")
        if isinstance(state, dict) and PRETRAINED_LOADED_KEY not in state:
            state[PRETRAINED_LOADED_KEY] = torch.tensor(bool(checkpoint.get(PRETRAINED_LOADED_KEY, True)))


def _state_without_loaded_flag(module: SparseMLP, state_dict: dict, prefix: str, *args) -> None:
    # Encoder weights without the flag: a state_dict of an older version, whose weights were trained
    # ones (see on_load_checkpoint). A partial load that sets no encoder weight changes nothing.
    if prefix + PRETRAINED_LOADED_KEY not in state_dict and prefix + "encoder.layers.0.linear.weight" in state_dict:
        state_dict[prefix + PRETRAINED_LOADED_KEY] = torch.tensor(True)


def _recheck_pretrained(module: SparseMLP, incompatible_keys) -> None:
    # Weights that hold the pre-trained encoder (or were trained from it) need no look at the flag at the
    # next use, so a graph traced from them (torch.export) never reads the buffer; others are checked then.
    module._pretrained_checked = not module.hparams["pretrained"] or bool(module.pretrained_loaded)


def check_num_classes(num_classes: object) -> None:
    if isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1:
        return
    hint = (
        " (a StackedDAE checkpoint records none: fine-tune from it with SparseMLP(..., pretrained=<that .ckpt>), "
        "or load it with StackedDAE.load_from_checkpoint)"
        if num_classes is None
        else ""
    )
    raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}{hint}")
