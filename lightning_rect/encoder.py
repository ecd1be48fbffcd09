"""The stack of Linear + activation layers shared by ``SparseMLP`` and ``StackedDAE``.

One module type carries weights from pre-training to fine-tuning, so nothing is copied by hand
between different layer classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from lightning_rect.activations import SignFlip, build_activation
from lightning_rect.errors import ConfigError


class HiddenLayer(nn.Module):
    """Linear -> activation -> optional sign flip -> division by a fixed scale.

    ``output_scale`` is 1 unless a ``scaled_sigmoid`` pre-training fixed it (see
    ``lightning_rect.reconstruction``). It is saved as the layer's extra state, so it travels with
    the checkpoint and fine-tuning sees the same values the next layer was pre-trained on; being a
    Python number, the common case (1) costs no tensor operation at all.
    """

    def __init__(self, in_features: int, out_features: int, activation: str, activation_args: dict | None,
                 sign_flip: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = build_activation(activation, activation_args)
        self.sign_flip = SignFlip(out_features) if sign_flip else None
        self.output_scale = 1.0
        # The paper only says "uniform": Glorot-uniform weights scaled by the activation's gain
        # (see lightning_rect.activations), zero biases.
        nn.init.xavier_uniform_(self.linear.weight, gain=getattr(self.activation, "init_gain", 1.0))
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.linear(x))
        if self.sign_flip is not None:
            h = self.sign_flip(h)
        if self.output_scale != 1.0:
            h = h / self.output_scale
        return h

    def get_extra_state(self) -> dict:
        return {"output_scale": self.output_scale}

    def set_extra_state(self, state: dict) -> None:
        self.output_scale = float(state["output_scale"])


class Encoder(nn.Module):
    """``forward`` returns the list of every hidden layer's output, computed once.

    The models use ``hidden[-1]`` as the representation, and the full list for the L1 penalty and
    for sparsity, so no term needs a second forward pass.
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], activation: str = "rectifier",
                 activation_args: dict | None = None, sign_flip: bool = False) -> None:
        super().__init__()
        check_sizes(in_features, hidden_sizes)
        sizes = [in_features, *hidden_sizes]
        self.in_features = in_features
        self.hidden_sizes = list(hidden_sizes)
        self.layers = nn.ModuleList(
            HiddenLayer(n_in, n_out, activation, activation_args, sign_flip) for n_in, n_out in zip(sizes, sizes[1:])
        )

    def forward(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """Outputs of the first ``depth`` layers (all by default); ``x`` is flattened per example."""
        x = flatten_features(x, self.in_features)
        hidden = []
        for layer in self.layers[:depth]:
            x = layer(x)
            hidden.append(x)
        return hidden

    def activation_modules(self) -> list[nn.Module]:
        """The activation module of each layer, in order: what ``SparsityMonitor`` watches."""
        return [layer.activation for layer in self.layers]


@torch.no_grad()
def dead_fractions(encoder: Encoder, inputs: Iterable[torch.Tensor], depth: int | None = None,
                   reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
    """Fraction of each of the first ``depth`` layers' units that output 0 on every input batch.

    ``reduce`` sums the per-unit counts over processes (``lambda t: strategy.reduce(t, reduce_op="sum")``
    under DDP), so a unit alive on any process's share of the data is alive.
    """
    device = next(encoder.parameters()).device
    fired: list[torch.Tensor] | None = None
    for x in inputs:
        hidden = [(h != 0).sum(dim=0) for h in encoder(x.to(device), depth=depth)]
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
    if x.shape[1] != in_features:
        raise ConfigError(
            f"inputs have {x.shape[1]} features per example (batch shape {tuple(x.shape)}) but the model's "
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
    return sum(h.abs().sum() for h in hidden) / (hidden[0].shape[0] * (num_layers or len(hidden)))


def check_sizes(in_features: int, hidden_sizes: Sequence[int]) -> None:
    if not hidden_sizes:
        raise ConfigError("hidden_sizes must list at least one layer size, e.g. [1000, 1000, 1000]; got []")
    bad = [n for n in hidden_sizes if not isinstance(n, int) or n < 1]
    if bad:
        raise ConfigError(f"hidden_sizes must be positive integers; got {list(hidden_sizes)}")
    if not isinstance(in_features, int) or in_features < 1:
        raise ConfigError(f"in_features must be a positive integer; got {in_features!r}")
