"""Hidden-unit non-linearities of the paper, by name, plus the sign-flip (symmetry) trick.

All activations are ``nn.Module`` classes so that forward hooks (``SparsityMonitor``) can find
them. Third-party activations register through the ``lightning_rect.activations`` entry point.

Facts each activation class states, so that nothing outside the registry compares names:

- ``output_range = (low, high)``: the interval its outputs lie in (``math.inf`` where unbounded).
  ``StackedDAE`` derives from it how a layer's outputs become reconstruction targets (a range with
  both ends finite and a negative low end, as tanh's (-1, 1), is mapped onto [0, 1] for
  cross-entropy), and ``SparsityMonitor`` counts non-zeros with one kernel fewer (no ``abs``) when
  ``low >= 0``. A plugin that declares no range is taken as unbounded, or as (0, inf) if it says
  ``nonnegative = True``.
- ``exact_zeros``: whether outputs are exactly 0 on a whole range of inputs (the rectifier). Where
  they are not (tanh, softplus, sigmoid) exact sparsity is 0 by construction, and the monitor says so.

``init_gain`` scales the Glorot-uniform initial weights of the layer feeding the activation (the
paper only says "uniform": ``docs/paper.md#what-the-paper-leaves-open``). Softplus has slope 1/2
at 0 for *every* unit, so with plain Glorot weights the input-dependent part of the signal shrinks
4x in variance per layer and a 3 x 1000 softplus net does not learn at all in its first epochs
(reproductions/README.md, "Measurements behind the defaults"); a gain of 2 (sigmoid: 4, slope
1/4) restores it. The rectifier
and tanh keep gain 1, the plain Glorot initialisation, and so does ``sharp_softplus`` for every a
(its sweep compares like with like). The softmax output layer keeps PyTorch's default
initialisation, also uniform (+-1/sqrt(fan_in)), the same for every network.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from lightning_rect.checks import check_positive
from lightning_rect.registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation", "lightning_rect.activations")


@ACTIVATIONS.register("rectifier")
class Rectifier(nn.Module):
    """max(0, x): exact zeros, hence sparse representations."""

    init_gain = 1.0
    output_range = (0.0, math.inf)
    exact_zeros = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@ACTIVATIONS.register("tanh")
class Tanh(nn.Module):
    init_gain = 1.0
    output_range = (-1.0, 1.0)
    exact_zeros = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


@ACTIVATIONS.register("softplus")
class Softplus(nn.Module):
    """log(1 + e^x), the smooth version of the rectifier (never exactly zero)."""

    init_gain = 2.0
    output_range = (0.0, math.inf)
    exact_zeros = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x)


@ACTIVATIONS.register("sigmoid")
class Sigmoid(nn.Module):
    init_gain = 4.0
    output_range = (0.0, 1.0)
    exact_zeros = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


@ACTIVATIONS.register("sharp_softplus")
class SharpSoftplus(nn.Module):
    """(1/a) * softplus(a * x): a=1 is softplus, a -> infinity approaches the rectifier.

    The paper's NORB sweep used a in {1, 1.3, 2, 3, 6}.
    """

    # The rectifier's gain (1) for every a, so a sharpness sweep varies the non-linearity alone and
    # its a -> infinity end starts where the rectifier does. (``softplus`` keeps 2: see above.)
    init_gain = 1.0
    output_range = (0.0, math.inf)
    exact_zeros = False

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        check_positive("activation_args.a (sharp_softplus sharpness)", a)
        self.a = float(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.softplus switches to the identity where a*x > threshold, which keeps large a stable.
        return F.softplus(x, beta=self.a, threshold=20.0)

    def extra_repr(self) -> str:
        return f"a={self.a}"


class SignFlip(nn.Module):
    """Multiplies the outputs of the second half of the units by -1 (the paper's symmetry trick).

    A rectifier's outputs are all >= 0; flipping half of them lets the next layer see inputs whose
    mean can cancel, as with tanh. Zeros stay zeros, so sparsity is unchanged.
    """

    # For type checkers only: a class annotation would also be read by TorchScript, which compiles this module.
    if TYPE_CHECKING:
        signs: torch.Tensor  # the buffer registered in __init__

    def __init__(self, num_units: int) -> None:
        super().__init__()
        signs = torch.ones(num_units)
        signs[num_units - num_units // 2 :] = -1.0
        self.register_buffer("signs", signs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.signs


def build_activation(name: str, args: dict | None = None) -> nn.Module:
    return ACTIVATIONS.build(name, **(args or {}))


def output_range(activation: nn.Module | type | str) -> tuple[float, float]:
    """``(low, high)`` of an activation (module, class or registry name), from its ``output_range``;
    without one, (0, inf) if it declares ``nonnegative = True``, else unbounded."""
    if isinstance(activation, str):
        activation = ACTIVATIONS.get(activation)
    declared = getattr(activation, "output_range", None)
    if declared is not None:
        low, high = declared
        return float(low), float(high)
    return (0.0, math.inf) if getattr(activation, "nonnegative", False) is True else (-math.inf, math.inf)


def is_bounded_signed(activation: nn.Module | type | str) -> bool:
    """Outputs in a finite range that reaches below 0 (tanh's (-1, 1)): a DAE maps them onto [0, 1]
    for cross-entropy, and the sign flip keeps them in range (no ``abs`` needed)."""
    low, high = output_range(activation)
    return low < 0 and math.isfinite(low) and math.isfinite(high)
