"""The stack of Linear + activation layers shared by ``SparseMLP`` and ``StackedDAE``.

One module type carries weights from pre-training to fine-tuning, so nothing is copied by hand
between different layer classes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import List, Optional, cast

import torch
from torch import nn

from lightning_rect.activations import SignFlip, build_activation
from lightning_rect.errors import ConfigError
from lightning_rect.fused_sgd import InPlaceSGD, fused_linear


class HiddenLayer(nn.Module):
    """Linear -> activation -> optional sign flip -> division by a fixed scale.

    ``output_scale`` is 1 unless pre-training fixed it: a ``scaled_sigmoid`` reconstruction (see
    ``lightning_rect.reconstruction``) or ``StackedDAE(rescale=True)`` divides each layer's outputs
    by their largest value on the training set before the next layer trains. It is saved as the
    layer's extra state, so it travels with the checkpoint and fine-tuning sees the same values the
    next layer was pre-trained on; being a Python number, the common case (1) costs no tensor
    operation at all. The saved state is a 0-dim tensor, as exporters expect of every ``state_dict``
    entry (the legacy ONNX exporter calls ``.detach()`` on each); checkpoints of older versions hold
    ``{"output_scale": x}``.
    """

    def __init__(
        self, in_features: int, out_features: int, activation: str, activation_args: dict | None, sign_flip: bool
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = build_activation(activation, activation_args)
        self.sign_flip = SignFlip(out_features) if sign_flip else None
        self.output_scale = 1.0
        #: set by a model with ``fused_sgd`` while it fits: the backward then updates ``linear`` in place
        self.fused_sgd: InPlaceSGD | None = None
        # The paper only says "uniform": Glorot-uniform weights scaled by the activation's gain
        # (see lightning_rect.activations), zero biases.
        nn.init.xavier_uniform_(self.linear.weight, gain=getattr(self.activation, "init_gain", 1.0))
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.linear(x) if torch.jit.is_scripting() else self._linear(x))
        if self.sign_flip is not None:
            h = self.sign_flip(h)
        if self.output_scale != 1.0:
            h = h / self.output_scale
        return h

    @torch.jit.unused  # TorchScript compiles the plain layer (fused_sgd is a training-time Python object)
    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        return fused_linear(self.linear, x, self.fused_sgd)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self.output_scale, dtype=torch.float64)  # float64: the Python float, exactly

    def set_extra_state(self, state: torch.Tensor | dict) -> None:
        self.output_scale = float(state["output_scale"] if isinstance(state, dict) else state)


class OutputScale(nn.Module):
    """Division by a fixed number (a ``HiddenLayer``'s ``output_scale``), in ``Encoder.to_sequential``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class Encoder(nn.Module):
    """``forward`` returns the list of every hidden layer's output, computed once.

    The models use ``hidden[-1]`` as the representation, and the full list for the L1 penalty and
    for sparsity, so no term needs a second forward pass.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        activation: str = "rectifier",
        activation_args: dict | None = None,
        sign_flip: bool = False,
    ) -> None:
        super().__init__()
        check_sizes(in_features, hidden_sizes)
        sizes = [in_features, *hidden_sizes]
        self.in_features = in_features
        self.hidden_sizes = list(hidden_sizes)
        self.layers = nn.ModuleList(
            HiddenLayer(n_in, n_out, activation, activation_args, sign_flip) for n_in, n_out in zip(sizes, sizes[1:])
        )

    def forward(self, x: torch.Tensor, depth: Optional[int] = None) -> List[torch.Tensor]:
        """Outputs of the first ``depth`` layers (all by default); ``x`` is flattened per example.

        Written so that ``torch.jit.script`` compiles it: TorchScript unrolls a loop over a
        ``ModuleList`` but cannot slice one by a runtime ``depth``, hence the index test."""
        x = flatten_features(x, self.in_features)
        count = len(self.layers)
        if depth is not None:
            count = depth if depth >= 0 else max(count + depth, 0)  # as layers[:depth] counts
        hidden: List[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            if index < count:
                x = layer(x)
                hidden.append(x)
        return hidden

    def to_sequential(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` computing this encoder's code, ``self(x)[-1]``, for (examples,
        in_features) inputs: per layer a copy of its ``nn.Linear`` and activation module, followed by
        a ``SignFlip`` with ``sign_flip`` and an ``OutputScale`` where the layer has a fixed scale
        (neither holds a ``state_dict`` entry). Its ``state_dict`` is the Linear weights alone, under
        ``nn.Sequential``'s keys (``0.weight``, ``0.bias``, ...): ready for ``torch.onnx.export``,
        ``torch.jit.script`` or loading into the same ``nn.Sequential`` written by hand."""
        modules: list[nn.Module] = []
        for layer in self.hidden_layers():
            modules += [copy.deepcopy(layer.linear), copy.deepcopy(layer.activation)]
            if layer.sign_flip is not None:
                modules.append(copy.deepcopy(layer.sign_flip))
            if layer.output_scale != 1.0:
                modules.append(OutputScale(layer.output_scale))
        return nn.Sequential(*modules)

    def activation_modules(self) -> list[nn.Module]:
        """The activation module of each layer, in order: what ``SparsityMonitor`` watches."""
        return [layer.activation for layer in self.hidden_layers()]

    def hidden_layers(self) -> list[HiddenLayer]:
        """``layers`` as the ``HiddenLayer``s they are (``__init__`` builds every one): ``nn.ModuleList``
        hands its items to a type checker as plain ``nn.Module``s."""
        return [layer for layer in self.layers if isinstance(layer, HiddenLayer)]


@torch.no_grad()
def dead_fractions(
    encoder: Encoder,
    inputs: Iterable[torch.Tensor],
    depth: int | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Fraction of each of the first ``depth`` layers' units that output 0 on every input batch.

    ``reduce`` sums the per-unit counts over processes (``lambda t: strategy.reduce(t, reduce_op="sum")``
    under DDP), so a unit alive on any process's share of the data is alive.
    """
    weight = next(encoder.parameters())  # inputs go to its device and dtype, as a precision plugin's would
    fired: list[torch.Tensor] | None = None
    for x in inputs:
        hidden = [(h != 0).sum(dim=0) for h in encoder(x.to(weight.device, weight.dtype), depth=depth)]
        fired = hidden if fired is None else [a + b for a, b in zip(fired, hidden)]
    if fired is None:
        return []
    if reduce is not None:
        fired = [reduce(f.double()) for f in fired]
    return [(f == 0).float().mean().item() for f in fired]


def flatten_features(x: torch.Tensor, in_features: int) -> torch.Tensor:
    """``x`` as (examples, features): image batches (N, C, H, W) are flattened; a size that does not
    match ``in_features`` is one readable error instead of torch's matrix-shape message."""
    if x.dim() != 2:
        x = x.flatten(1) if x.dim() > 2 else x.reshape(1, -1)
    # (not while tracing: the example input fixes the size, and the test would only be a TracerWarning)
    if not torch.jit.is_tracing() and x.shape[1] != in_features:
        raise ConfigError(  # the shape as a list: TorchScript cannot build a tuple of unknown length
            f"inputs have {x.shape[1]} features per example (batch shape {list(x.shape)}) but the model's "
            f"in_features is {in_features}; set in_features={x.shape[1]} (the CLI links it from data.input_size)"
        )
    return x


def l1_penalty(hidden: Sequence[torch.Tensor], num_layers: int | None = None) -> torch.Tensor:
    """|h| summed over the units of a layer, averaged over the examples of the batch, summed over
    the given layers and divided by ``num_layers`` (default: how many are given).

    One definition for both phases: each layer's term weighs ``l1 / num_layers`` of the network, in
    fine-tuning (all layers at once) and in pre-training (``StackedDAE``: one layer at a time, still
    divided by the network's depth). The paper does not say how layers combine
    (``docs/paper.md#what-the-paper-leaves-open``); the authors' library sums them. The average is
    kept because with it the paper's 0.001 gives about the paper's MNIST sparsity, while the sum
    (0.003 averaged over 3 layers) gives a sparser network with a higher error: the rows 0.001 and
    0.003 of ``reproductions/l1_sweep/l1_sweep.md``. The library's sum: ``l1 = 0.001 * depth``.
    """
    # cast: typeshed's sum() adds its start value, 0, to the result type; ``hidden`` is never empty here
    total = cast(torch.Tensor, sum(h.abs().sum() for h in hidden))
    return total / (hidden[0].shape[0] * (num_layers or len(hidden)))


def check_sizes(in_features: int, hidden_sizes: Sequence[int]) -> None:
    if not hidden_sizes:
        raise ConfigError("hidden_sizes must list at least one layer size, e.g. [1000, 1000, 1000]; got []")
    bad = [n for n in hidden_sizes if not isinstance(n, int) or n < 1]
    if bad:
        raise ConfigError(f"hidden_sizes must be positive integers; got {list(hidden_sizes)}")
    if not isinstance(in_features, int) or in_features < 1:
        raise ConfigError(f"in_features must be a positive integer; got {in_features!r}")
