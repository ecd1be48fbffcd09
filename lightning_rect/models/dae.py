"""``StackedDAE``: greedy layer-wise denoising auto-encoder pre-training of an ``Encoder``.

One ``fit`` trains layer 1 for ``epochs_per_layer`` epochs, then layer 2 on the fixed outputs of
layer 1, and so on, and stops by itself after the last layer's epochs (any larger
``trainer.max_epochs`` works, Lightning's default included). Lower layers are run without
gradients, so they stay frozen while a higher one trains; one SGD optimizer holds every parameter,
and parameters without a gradient are skipped. Because each step trains one layer, DDP must be
told that some parameters get no gradient: ``strategy: ddp_find_unused_parameters_true``
(``configs/presets/ddp_pretrain.yaml``); plain ``ddp`` is refused at the start of fit. The trained encoder is handed to
``SparseMLP(pretrained=<checkpoint>)``; ``forward`` (and so ``predict``) returns the top layer's
code, features for other models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from lightning_rect.activations import is_bounded_signed, output_range
from lightning_rect.checkpoint import MODEL_KEY, read_pretrained_encoder
from lightning_rect.checks import check_non_negative, check_positive, check_positive_int
from lightning_rect.encoder import Encoder, dead_fractions, l1_penalty
from lightning_rect.errors import CheckpointError, ConfigError
from lightning_rect.fused_sgd import FusedSGDBinding, InPlaceSGD, check_trainer, fused_linear
from lightning_rect.lightning_attrs import trainer_fast_dev_run
from lightning_rect.metrics import LossAverage, as_metric
from lightning_rect.models.batch import split_batch
from lightning_rect.noise import NOISE
from lightning_rect.reconstruction import RECONSTRUCTIONS, reconstruction_range

#: Fixed seed of the corruption used for validation and test, so epochs are compared on equal terms.
EVAL_NOISE_SEED = 12345


#: Why a StackedDAE does not train under Fabric, and what to do instead.
UNDER_FABRIC = (
    "StackedDAE trains greedily on a Trainer's epochs (they pick the layer and end the schedule), "
    "which Fabric does not run; pre-train it with lightning.Trainer().fit, then use its encoder "
    "under Fabric: SparseMLP(pretrained=<checkpoint>) or StackedDAE.load_encoder(<checkpoint>)"
)


class StackedDAE(FusedSGDBinding, LightningModule):
    """Stacked denoising auto-encoder, trained greedily one hidden layer at a time.

    Args:
        in_features: input size (linked from ``data.input_size``).
        num_classes: not used for training; recorded so the fine-tuning data set can be checked.
        hidden_sizes: units of each hidden layer, as in ``SparseMLP``.
        activation: registry name of the hidden units, as in ``SparseMLP``.
        activation_args: arguments of the activation, as in ``SparseMLP``.
        sign_flip: the paper's symmetry trick, as in ``SparseMLP``; with it, layers 2 and up
            reconstruct |h| unless the reconstruction is ``linear`` (``lightning_rect.reconstruction``).
        l1: the activation penalty, as in ``SparseMLP``: the L1 term of the layer in training weighs
            ``l1 / len(hidden_sizes)``, as each layer's does in fine-tuning (``encoder.l1_penalty``).
        reconstruction: registry name: softplus, scaled_sigmoid, linear, rectifier, sigmoid.
        noise: corruption of the first layer's input: masking or salt_and_pepper.
        noise_level: corruption probability in [0, 1) (the paper: 0.25; salt_and_pepper: the
            probability that a present input is dropped).
        noise_args: further arguments of the first layer's noise, e.g. ``{switch_on: 0.005}`` for
            salt_and_pepper (the probability that an absent input is switched on).
        higher_noise: corruption of the inputs of layers 2 and up (default: layer 1's); the paper's
            text setup is salt_and_pepper below, masking above.
        higher_noise_level: its probability (default: layer 1's ``noise_level``).
        tied_weights: decoder weight = encoder weight transposed (the paper does not say; default off).
        lr: constant SGD learning rate (the paper picks it from {0.1, 0.01, 0.001, 0.0001}).
        epochs_per_layer: epochs of pre-training for each hidden layer; training ends after
            ``epochs_per_layer * len(hidden_sizes)`` epochs (``trainer.max_epochs`` must allow that many).
        rescale: at the end of each layer's epochs, divide its outputs by their largest absolute value on
            the (clean) training inputs, so the next layer, and fine-tuning, see codes in [-1, 1], as the
            authors' library does for rectifier layers (docs/paper.md#pre-training). The scale is the
            layer's ``output_scale`` (saved in the checkpoint, kept by ``SparseMLP(pretrained=...)``); the
            layer's decoder is multiplied by it, so its reconstruction is unchanged.
        fused_sgd: apply plain SGD inside backward, in place, to the encoder layers and the decoders
            (a tied decoder's gradient still goes through the optimizer), with the optimizer's current
            learning rate: the same training, faster at small minibatches (``lightning_rect.fused_sgd``,
            benchmarks/README.md). Under ``Trainer.fit`` only; refused at the start of fit where the
            update would differ from plain SGD's (several devices, gradient accumulation or clipping,
            another optimizer, a precision other than 32-true).
    """

    selection_metric = "val/recon"

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int | None = None,
        hidden_sizes: Sequence[int] = (1000, 1000, 1000),
        activation: str = "rectifier",
        activation_args: dict | None = None,
        sign_flip: bool = False,
        l1: float = 0.001,
        reconstruction: str = "softplus",
        noise: str = "masking",
        noise_level: float = 0.25,
        noise_args: dict | None = None,
        higher_noise: str | None = None,
        higher_noise_level: float | None = None,
        tied_weights: bool = False,
        lr: float = 0.01,
        epochs_per_layer: int = 5,
        rescale: bool = False,
        fused_sgd: bool = False,
    ) -> None:
        super().__init__()
        check_non_negative("l1", l1)
        check_positive("lr", lr)
        check_positive_int("epochs_per_layer", epochs_per_layer)
        self.save_hyperparameters()
        self.encoder: Encoder = Encoder(in_features, list(hidden_sizes), activation, activation_args, sign_flip)
        self.reconstruction = RECONSTRUCTIONS.build(reconstruction)
        self.noises = [
            NOISE.build(noise, level=noise_level, **(noise_args or {})),
            NOISE.build(
                higher_noise or noise,
                level=noise_level if higher_noise_level is None else higher_noise_level,
                **({} if higher_noise else (noise_args or {})),
            ),
        ]
        sizes = [in_features, *hidden_sizes]
        if tied_weights:  # only a bias of its own; the weight is the encoder's, transposed
            self.decoder_biases = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in sizes[:-1])
        else:
            decoders = [nn.Linear(n_hid, n_in) for n_in, n_hid in zip(sizes, sizes[1:])]
            for decoder in decoders:
                nn.init.xavier_uniform_(decoder.weight)
                nn.init.zeros_(decoder.bias)
            self.decoders = nn.ModuleList(decoders)
        self.num_layers = len(sizes) - 1
        self.train_recon = LossAverage()
        self.eval_recon = nn.ModuleList(MeanMetric() for _ in range(self.num_layers))
        self._generator: torch.Generator | None = None
        #: the optimizer binding of the fused layers, while a fit with ``fused_sgd`` runs
        self._fused: InPlaceSGD | None = None
        # Set at each epoch start, read by the steps: a compiled step then depends on the layer, not
        # on the epoch counter (which would recompile it every epoch).
        self._training_layer = 0
        self._evaluated_layers: tuple[int, ...] = ()
        self.dead_after_pretraining: dict[str, float] = {}
        # validation reconstruction error of each finished layer at the end of its own epochs
        self.recon_after_pretraining: dict[int, float] = {}

    # -- the layer-wise schedule ---------------------------------------------------------------
    @property
    def current_layer(self) -> int:
        """0-based index of the layer being pre-trained in the current epoch."""
        return min(self.current_epoch // self.hparams["epochs_per_layer"], self.num_layers - 1)

    def sparsity_modules(self) -> list[nn.Module]:
        return self.encoder.activation_modules()

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole greedy schedule: ``epochs_per_layer`` for each layer."""
        return self.hparams["epochs_per_layer"] * self.num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The top hidden layer's code for inputs ``x`` (no corruption): features for other models."""
        return self.encoder(x)[-1]

    @staticmethod
    def load_encoder(path: str) -> Encoder:
        """The pre-trained ``Encoder`` of a StackedDAE checkpoint, for a model of one's own: its layer
        sizes, activation, sign flip, weights and fixed output scales, e.g.
        ``self.encoder = StackedDAE.load_encoder(path)`` (``SparseMLP`` does it with ``pretrained=``). Its
        weights keep the dtype they were saved in (float64 from a DAE pre-trained under 64-true)."""
        return read_pretrained_encoder(path).build()

    def on_fit_start(self) -> None:
        if self.hparams["fused_sgd"]:
            linears = [layer.linear for layer in self.encoder.hidden_layers()] + list(getattr(self, "decoders", []))
            self._bind_fused_sgd(check_trainer(self, (p for linear in linears for p in linear.parameters())))
        ddp_module = self.trainer.strategy.model  # DistributedDataParallel under DDP, by now
        if getattr(ddp_module, "find_unused_parameters", None) is False:
            raise ConfigError(
                "StackedDAE trains one layer per step, so under DDP the other layers get no gradient; use "
                'strategy="ddp_find_unused_parameters_true" (CLI: --trainer.strategy=ddp_find_unused_parameters_true, '
                "configs/presets/ddp_pretrain.yaml)"
            )
        max_epochs, epochs_per_layer = self.trainer.max_epochs, self.hparams["epochs_per_layer"]
        if not trainer_fast_dev_run(self.trainer) and max_epochs is not None and 0 <= max_epochs < self.total_epochs:
            raise ConfigError(
                f"trainer.max_epochs is {max_epochs} but StackedDAE needs epochs_per_layer x layers = "
                f"{epochs_per_layer} x {self.num_layers} = {self.total_epochs}; set trainer.max_epochs: "
                f"{self.total_epochs} (or more: training stops after the last layer) or lower epochs_per_layer"
            )

    def on_train_start(self) -> None:
        if self.current_layer == 0:  # a fit resumed past layer 1 has reconstructed the data already
            self._warn_inputs_out_of_reach()
        # A step limit that ends the greedy schedule early leaves the top layers untrained and
        # val/recon infinite (it stays inf until the last layer trains): say so now, not after the fit.
        trainer = self.trainer
        max_steps, batches = trainer.max_steps, trainer.num_training_batches
        if (
            trainer_fast_dev_run(trainer)
            or max_steps is None
            or max_steps < 0
            or not math.isfinite(batches)
            or batches < 1
        ):
            return
        steps_per_layer = self.hparams["epochs_per_layer"] * math.ceil(batches / trainer.accumulate_grad_batches)
        needed = steps_per_layer * self.num_layers
        if max_steps < needed:
            rank_zero_warn(
                f"trainer.max_steps={max_steps} stops StackedDAE before its schedule ends ({self.num_layers} layers x "
                f"{steps_per_layer} steps = {needed} steps): layer {max_steps // steps_per_layer + 1} of "
                f"{self.num_layers} never finishes its epochs and val/recon stays inf; set trainer.max_steps to "
                f"{needed} or more, or leave it unset (-1)"
            )

    @torch.no_grad()
    def _warn_inputs_out_of_reach(self) -> None:
        """The first layer reconstructs the data: say so when the data holds values its reconstruction
        cannot output (standardized inputs are negative; softplus, rectifier and sigmoid are not), which
        would otherwise only show as a high reconstruction error."""
        low, high = reconstruction_range(self.reconstruction)
        if low == -math.inf and high == math.inf:
            return
        extremes = torch.full((2,), -math.inf, dtype=torch.float64)  # (-min, max): both reduce by max
        for batch in self._train_batches():  # as the loader yields them, on the host
            x = split_batch(batch)[0]
            if x.numel():
                x_min, x_max = torch.aminmax(x)
                extremes = torch.maximum(extremes, torch.stack([-x_min.double(), x_max.double()]).cpu())
        if self.trainer.world_size > 1:
            extremes = self._all_gather_tensor(extremes.to(self.device)).reshape(-1, 2).max(dim=0).values
        smallest, largest = -extremes[0].item(), extremes[1].item()
        beyond = [f"below {low:g}"] if smallest < low else []
        beyond += [f"above {high:g}"] if largest > high else []
        if beyond:
            unit = getattr(self.reconstruction, "unit_interval_targets", False)
            clamped = f" (targets are clamped into [{low:g}, {high:g}])" if unit else ""
            reconstruction = self.hparams["reconstruction"]
            rank_zero_warn(
                f"StackedDAE: the training inputs range over [{smallest:.4g}, {largest:.4g}] but reconstruction "
                f"'{reconstruction}' outputs values in [{low:g}, {high:g}], so layer 1 cannot reconstruct "
                f"the inputs {' and '.join(beyond)}{clamped}; set reconstruction: linear (standardized data), "
                f"or scale the inputs into [{low:g}, {high:g}]"
            )

    def on_train_epoch_start(self) -> None:
        if self.fabric is not None:
            raise ConfigError(UNDER_FABRIC)
        layer = self._training_layer = self.current_layer
        # Noise drawn from (seed, epoch) only: a resumed run corrupts exactly as an uninterrupted one.
        self._generator = self._seeded_generator(torch.initial_seed() * 7919 + self.current_epoch)
        first_epoch_of_layer = self.current_epoch % self.hparams["epochs_per_layer"] == 0
        if layer > 0 and self.reconstruction.scales_inputs and first_epoch_of_layer:
            self._fix_output_scale(layer - 1)

    def _train_batches(self) -> Iterable[Any]:
        """The Trainer's training dataloader, which the fit loop has set up before the hooks that read it."""
        loader = self.trainer.train_dataloader
        if loader is None:
            raise RuntimeError("StackedDAE reads the training batches only while a Trainer fits it")
        return loader

    def _all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """``all_gather`` of one tensor, which returns one tensor."""
        # cast: Lightning types all_gather's result as any collection, whatever it was given
        return cast(torch.Tensor, self.all_gather(tensor))

    def _decoder(self, layer: int) -> nn.Linear:
        """``decoders[layer]`` as the ``nn.Linear`` it is (``nn.ModuleList`` types its items as ``nn.Module``)."""
        decoder = self.decoders[layer]
        if not isinstance(decoder, nn.Linear):
            raise TypeError(f"StackedDAE.decoders[{layer}] is a {type(decoder).__name__}, not an nn.Linear")
        return decoder

    def _seeded_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed % (2**63))

    @torch.no_grad()
    def _fix_output_scale(self, layer: int) -> None:
        """Divide ``layer``'s outputs by their maximum over the training set (all ranks), for good.

        Idempotent (the maximum is taken without the old scale), and the layer's decoder absorbs the
        change, so the layer's reconstruction of its input stays what it was."""
        target = self.encoder.hidden_layers()[layer]
        old_scale, target.output_scale = target.output_scale, 1.0
        largest = torch.zeros((), device=self.device)
        # cast: Lightning types dtype as str | torch.dtype (a str only after Module.type("<name>"), never here)
        dtype = cast(torch.dtype, self.dtype)
        for batch in self._train_batches():
            x, _ = split_batch(batch)
            largest = torch.maximum(largest, self.encoder(x.to(self.device, dtype), depth=layer + 1)[-1].abs().max())
        if self.trainer.world_size > 1:
            largest = self._all_gather_tensor(largest).max()
        target.output_scale = largest.item() if largest > 0 else 1.0
        if not self.hparams["tied_weights"]:  # the tied decoder multiplies by the scale itself (decode)
            self._decoder(layer).weight.mul_(target.output_scale / old_scale)

    # -- one layer's denoising reconstruction --------------------------------------------------
    def layer_inputs(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Clean input of ``layer``: the data, or the frozen outputs of the layers below."""
        if layer == 0:
            return x
        with torch.no_grad():
            return self.encoder(x, depth=layer)[-1]

    def decode(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Decoder pre-activation ``f`` for ``layer``'s hidden output ``h``."""
        if self.hparams["tied_weights"]:
            hidden_layer = self.encoder.hidden_layers()[layer]
            scale = hidden_layer.output_scale  # undo the layer's fixed scale (rescale)
            return F.linear(
                h * scale if scale != 1.0 else h,
                hidden_layer.linear.weight.t(),
                self.decoder_biases[layer],
            )
        return fused_linear(self._decoder(layer), h, self._fused)

    def reconstruction_loss(
        self, x: torch.Tensor, layer: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction cost, L1 penalty) of ``layer`` on the batch ``x``."""
        clean = self.layer_inputs(x, layer)
        target = self._target(clean, layer)
        noise = self.noises[0 if layer == 0 else 1]
        h = self.encoder.layers[layer](noise(clean, generator))
        cost = self.reconstruction.cost(self.decode(h, layer), target)
        return cost, l1_penalty([h], num_layers=self.num_layers)

    def _target(self, clean: torch.Tensor, layer: int) -> torch.Tensor:
        # From the activation's output range: outputs bounded on both sides and signed (tanh's
        # (-1, 1)), flipped or not, map onto [0, 1] below without losing their sign.
        activation = self.encoder.hidden_layers()[0].activation
        signed = layer > 0 and is_bounded_signed(activation)
        if layer > 0 and self.hparams["sign_flip"] and self.reconstruction.nonnegative_outputs and not signed:
            return clean.abs().clamp(max=1) if self.reconstruction.unit_interval_targets else clean.abs()
        if not self.reconstruction.unit_interval_targets:
            return clean
        if signed:
            low, high = output_range(activation)
            clean = (clean - low) / (high - low)
        return clean.clamp(0, 1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.fabric is not None:
            raise ConfigError(UNDER_FABRIC)
        x, _ = split_batch(batch)  # labels, if any, are not used
        cost, penalty = self.reconstruction_loss(x, self._training_layer, self._generator)
        self.train_recon.add(cost)
        return cost + self.hparams["l1"] * penalty if self.hparams["l1"] else cost

    def on_train_epoch_end(self) -> None:
        if self.train_recon.steps:
            self.log(
                f"train/pretrain/layer_{self.current_layer + 1}/recon",
                self.train_recon.pop(),
                prog_bar=True,
                sync_dist=True,
            )
        if (self.current_epoch + 1) % self.hparams["epochs_per_layer"] == 0:  # the layer's last epoch
            layer = self.current_layer
            if self.hparams["rescale"]:  # before the epoch's checkpoints are written (they run after this hook)
                self._fix_output_scale(layer)
            self.dead_after_pretraining[f"pretrain/layer_{layer + 1}/dead"] = self._dead_fraction(layer)
            self.log(
                f"pretrain/layer_{layer + 1}/dead", self.dead_after_pretraining[f"pretrain/layer_{layer + 1}/dead"]
            )
        if self.current_epoch + 1 >= self.total_epochs:
            self.trainer.should_stop = True  # every layer has had its epochs

    def _dead_fraction(self, layer: int) -> float:
        """Fraction of ``layer``'s units that output 0 on every training example (all ranks)."""
        inputs = (split_batch(batch)[0] for batch in self._train_batches())
        reduce = lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        return dead_fractions(self.encoder, inputs, depth=layer + 1, reduce=reduce)[layer]

    def extra_results(self) -> dict[str, float]:
        """For ``results.json`` and the printed summary: each layer's dead-unit fraction on the
        training data at the end of its own pre-training epochs (fine-tuning cannot revive those)."""
        return dict(self.dead_after_pretraining)

    # -- evaluation with a fixed corruption: the layer in training (validation), all (test) ------
    def _eval_layers(self) -> range:
        return range(self.num_layers) if self.trainer.testing else range(self.current_layer, self.current_layer + 1)

    def on_validation_epoch_start(self) -> None:
        self._eval_generator = self._seeded_generator(EVAL_NOISE_SEED)
        self._evaluated_layers = tuple(self._eval_layers())

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx: int) -> None:
        x, _ = split_batch(batch)
        for layer in self._evaluated_layers:
            cost, _ = self.reconstruction_loss(x, layer, self._eval_generator)
            as_metric(self.eval_recon[layer]).update(cost, weight=len(x))

    test_step = validation_step

    def _log_eval(self, stage: str) -> None:
        values = {}
        for layer in self._eval_layers():
            metric = as_metric(self.eval_recon[layer])
            values[f"{stage}/pretrain/layer_{layer + 1}/recon"] = metric.compute()
            metric.reset()
        layer = self.current_layer
        if stage == "val" and not self.trainer.sanity_checking:  # the last one of a layer's epochs stays
            self.recon_after_pretraining[layer] = float(values[f"val/pretrain/layer_{layer + 1}/recon"])
        # Selection metric (the checkpoint within a run, the learning rate across runs): the sum over
        # layers of each layer's reconstruction error on its own input, the lower layers' as they
        # ended their epochs. The top layer's alone would favour a run whose lower layers collapsed
        # (their outputs are easy to reconstruct). Infinite while lower layers train, so the kept
        # checkpoint always has every layer pre-trained.
        if stage == "test":
            total = sum(values.values())
        elif layer == self.num_layers - 1:
            lower = sum(self.recon_after_pretraining.get(k, 0.0) for k in range(layer))  # 0: never validated
            total = values[f"val/pretrain/layer_{layer + 1}/recon"] + lower
        else:
            total = torch.tensor(math.inf, device=self.device)
        values[f"{stage}/recon"] = torch.as_tensor(total, device=self.device, dtype=torch.float32)
        self.log_dict(values, prog_bar=False, sync_dist=True)  # already global; silences DDP's warning

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The top layer's code of each example; batches may be ``(x, y)`` or bare ``x``."""
        return self(split_batch(batch)[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[MODEL_KEY] = "StackedDAE"
        checkpoint["dead_after_pretraining"] = dict(self.dead_after_pretraining)  # a resume keeps the finished layers'
        checkpoint["recon_after_pretraining"] = dict(self.recon_after_pretraining)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        written_by = checkpoint.get(MODEL_KEY)
        if written_by not in (None, "StackedDAE"):  # before its weights meet this model's
            raise CheckpointError(
                f"this checkpoint was written by {written_by}, not by StackedDAE; load it with "
                f"{written_by}.load_from_checkpoint"
            )
        # A resume starts from the checkpoint's; testing the best checkpoint right after fit keeps the
        # measurements made since it was saved (e.g. the top layer's, when its best epoch was not its last).
        self.dead_after_pretraining = {**checkpoint.get("dead_after_pretraining", {}), **self.dead_after_pretraining}
        self.recon_after_pretraining = {
            **{int(k): v for k, v in checkpoint.get("recon_after_pretraining", {}).items()},
            **self.recon_after_pretraining,
        }
