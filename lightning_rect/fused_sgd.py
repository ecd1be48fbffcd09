"""Plain SGD applied inside backward, in place, for the models' Linear layers (``fused_sgd: true``).

At the paper's minibatch of 10 a step is bound by memory traffic over the weight matrices: autograd
writes each weight's gradient into a new tensor, which the optimizer then reads with the weight to
write the weight back. With ``fused_sgd`` a covered layer's backward computes its input's gradient
from the weight (still the old one, as plain SGD's gradient uses) and then updates the weight in one
BLAS call, ``W.addmm_(delta.t(), h, alpha=-lr)``, and its bias likewise. No gradient tensor is made
for them: their ``.grad`` stays ``None``, so the optimizer's step skips them and still steps every
other parameter (a tied decoder's weight, an activation's parameters). ``lr`` is read from the
optimizer's param group at each backward, so learning-rate schedulers keep working, and the
optimizer holds no state, so checkpoints and resuming are those of plain SGD.

Only where that is exactly plain SGD: ``check_trainer`` refuses, in one line at the start of fit,
whatever would change the update (another optimizer or SGD setting, several processes, gradient
accumulation or clipping, a precision other than 32-true or 64-true, manual optimization). Callbacks that read
the covered weights' gradients (gradient-norm logging) see none. The fused path is taken only
while its Trainer is training with gradients enabled; evaluation, export, use outside a Trainer and
code that ``torch.compile`` traces run the plain layers (whose gradients the optimizer then applies).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn

from lightning_rect.errors import ConfigError

_SWITCH_OFF = "or set the model's fused_sgd: false"
#: Precisions whose SGD step is plain: no gradient scaling, weights and gradients in one dtype.
FULL_PRECISIONS = ("32-true", "64-true")


class InPlaceSGD:
    """What a fused layer's backward reads: the learning rate of each covered parameter's param
    group in ``optimizer``, at the time of the step. Active while ``trainer`` is training, so a model
    a crashed fit left bound trains plainly afterwards.

    Copies (``copy.deepcopy``, pickling the model) come out unbound (``None``): a copy does not step
    this optimizer."""

    def __init__(self, trainer, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
        self.trainer = trainer
        self.optimizer = optimizer
        group_of = {id(p): index for index, group in enumerate(optimizer.param_groups) for p in group["params"]}
        # Indices, not the group dicts: restoring a checkpoint replaces the dicts (load_state_dict).
        self._group = {id(p): group_of[id(p)] for p in params if id(p) in group_of}

    @property
    def active(self) -> bool:
        return self.trainer.training

    def lr(self, param: torch.Tensor) -> float:
        lr = self.optimizer.param_groups[self._group[id(param)]]["lr"]
        return lr.item() if isinstance(lr, torch.Tensor) else lr

    def __reduce__(self):
        return _unbound, ()


def _unbound() -> None:
    return None


class _LinearWithSGD(torch.autograd.Function):
    """``F.linear`` whose backward returns the input's gradient and applies the SGD update to the
    weight and bias itself, returning no gradient for them."""

    # forward with ctx rather than a separate setup_context, which costs about 30 us more per call on
    # the CPU (benchmarks/README.md, fast_path.py).
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, sgd: InPlaceSGD) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.sgd = sgd
        return F.linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable  # runs it without grad: the parameters are leaves
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, bias = ctx.saved_tensors
        # Before the update: the gradient passed down uses the weights of the forward pass.
        grad_in = grad_out.matmul(weight) if ctx.needs_input_grad[0] else None
        if grad_out.dim() != 2:
            grad_out, x = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[1]:
            weight.addmm_(grad_out.t(), x, alpha=-ctx.sgd.lr(weight))
        if bias is not None and ctx.needs_input_grad[2]:
            bias.add_(grad_out.sum(0), alpha=-ctx.sgd.lr(bias))
        return grad_in, None, None, None


def fused_linear(module: nn.Linear, x: torch.Tensor, sgd: InPlaceSGD | None) -> torch.Tensor:
    """``module(x)``, or with ``sgd`` bound and active and gradients enabled, the same output from a
    node whose backward updates ``module``'s parameters in place. Code that ``torch.compile`` traces
    takes the plain layer: its parameters then get gradients, which the optimizer's step applies."""
    if sgd is not None and not torch.compiler.is_compiling() and torch.is_grad_enabled() and sgd.active:
        return _LinearWithSGD.apply(x, module.weight, module.bias, sgd)
    return module(x)


def check_trainer(model, params: Iterable[nn.Parameter]) -> InPlaceSGD:
    """The binding of ``model``'s fused layers (with parameters ``params``) to its Trainer's optimizer;
    a ``ConfigError`` of one line naming why wherever the update would not be plain SGD's."""
    trainer = model.trainer
    params = list(params)
    strategy = trainer.strategy
    if not isinstance(strategy, SingleDeviceStrategy) or trainer.world_size > 1:
        _refuse(
            f"the strategy is {type(strategy).__name__} with {trainer.world_size} process(es) and fused_sgd "
            "updates the weights inside backward, before gradients could be reduced across processes; train on one "
            "device (strategy: auto, devices: 1)"
        )
    if trainer.precision not in FULL_PRECISIONS:
        _refuse(
            f"precision is {trainer.precision!r} and fused_sgd applies unscaled gradients in the weights' own "
            "dtype as backward makes them; use precision: 32-true (or 64-true)"
        )
    if trainer.accumulate_grad_batches != 1:
        _refuse(
            f"accumulate_grad_batches is {trainer.accumulate_grad_batches} and fused_sgd updates the weights at every "
            "backward, so no gradient is accumulated; set it to 1 (or raise the data's batch_size)"
        )
    if trainer.gradient_clip_val:
        _refuse(
            f"gradient_clip_val is {trainer.gradient_clip_val} and fused_sgd makes no gradient tensor to clip; "
            "leave gradient clipping off"
        )
    if not model.automatic_optimization:
        _refuse(
            "the model uses manual optimization and fused_sgd steps inside every backward; use automatic optimization"
        )
    optimizers = trainer.optimizers
    if len(optimizers) != 1 or type(optimizers[0]) is not torch.optim.SGD:
        names = ", ".join(type(o).__name__ for o in optimizers) or "none"
        _refuse(
            f"the optimizer is {names} and fused_sgd performs exactly one plain torch.optim.SGD; use the model's own "
            "optimizer: sgd (a learning-rate scheduler is fine)"
        )
    optimizer = optimizers[0]
    for index, group in enumerate(optimizer.param_groups):
        extra = {key: group.get(key) for key in ("momentum", "weight_decay", "nesterov", "maximize") if group.get(key)}
        if extra:
            settings = ", ".join(f"{key}={value}" for key, value in extra.items())
            _refuse(
                f"SGD param group {index} has {settings} and fused_sgd performs plain SGD only (no momentum, weight "
                "decay, nesterov or maximize); set them to 0/false"
            )
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    name_of = {id(p): name for name, p in model.named_parameters()}
    missing = [name_of.get(id(p), "?") for p in params if p.requires_grad and id(p) not in held]
    if missing:
        _refuse(
            f"parameter {missing[0]} is not in the optimizer, so plain SGD would not train it but fused_sgd would; "
            "give the optimizer every parameter (or set requires_grad=False on it)"
        )
    return InPlaceSGD(trainer, optimizer, params)


def _refuse(reason: str) -> None:
    raise ConfigError(f"fused_sgd cannot run here: {reason}, {_SWITCH_OFF}")


class _FusedLayer(Protocol):
    fused_sgd: InPlaceSGD | None


class _LayeredEncoder(Protocol):
    """What the binding needs of a model's ``Encoder`` (named by its shape: ``encoder`` imports this module)."""

    def hidden_layers(self) -> Sequence[_FusedLayer]: ...


class FusedSGDBinding:
    """What both models do with the fast path's state: bind it to their encoder's layers for a fit
    (``_bind_fused_sgd``, from ``on_fit_start``) and unbind it when the fit ends."""

    if TYPE_CHECKING:  # the model's own, set in its __init__
        encoder: _LayeredEncoder
        _fused: InPlaceSGD | None

    def on_fit_end(self) -> None:
        self._bind_fused_sgd(None)

    def _bind_fused_sgd(self, sgd: InPlaceSGD | None) -> None:
        self._fused = sgd
        for layer in self.encoder.hidden_layers():
            layer.fused_sgd = sgd
