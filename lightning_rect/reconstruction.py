"""How a denoising auto-encoder layer reconstructs its input, by name.

A strategy turns the decoder's pre-activation ``f`` into an output, and scores it against the
clean layer input (the *target*). Costs are summed over input dimensions and averaged over the
examples of the batch, matching the paper's per-example costs.

==================  ====================  ==========================================================
name                output                cost (target = the clean input of the layer)
==================  ====================  ==========================================================
``softplus``        softplus(f)           squared error (the paper's choice for images)
``scaled_sigmoid``  sigmoid(f)            cross-entropy; the previous layer's activations are divided
                                          by a fixed scale so they lie in [0, 1] (the paper's text setup)
``linear``          f                     squared error (use with the L1 penalty on activations)
``rectifier``       max(0, f)             squared error
``sigmoid``         sigmoid(f)            cross-entropy; inputs must lie in [0, 1] (tanh layers' outputs
                                          are mapped from [-1, 1] by (h + 1) / 2)
==================  ====================  ==========================================================

How ``scaled_sigmoid`` fixes its scale: when layer k (k >= 2) starts pre-training, the model runs
the whole training set through the (already trained, frozen) layer k-1 and takes the largest
activation it produces. That number becomes layer k-1's ``output_scale`` (saved state): from then on the
layer's outputs are divided by it, in pre-training and in every later use of the encoder (it is
saved in the checkpoint and loaded by ``SparseMLP(pretrained=...)``). Targets are clamped to
[0, 1], since new data may exceed the training maximum.

With the sign flip (``sign_flip: true``) half of a layer's outputs are negative, which softplus,
rectifier and sigmoid outputs cannot produce: the layer above then reconstructs |h| (as the
authors' library does); ``linear`` reconstructs h itself.

Each strategy states its ``output_range``; ``StackedDAE`` warns at the start of fit when the first
layer's training inputs lie outside it (standardized data is negative: use ``linear``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_rect.activations import is_bounded_signed
from lightning_rect.registry import Registry

RECONSTRUCTIONS: Registry = Registry("reconstruction", "lightning_rect.reconstructions")


class Reconstruction:
    #: cross-entropy strategies need targets in [0, 1]
    unit_interval_targets = False
    #: ``scaled_sigmoid``: divide lower layers' outputs by a fixed scale before stacking
    scales_inputs = False
    #: outputs are never negative: with the sign flip, such a strategy reconstructs |h| (StackedDAE)
    nonnegative_outputs = True
    #: ``(low, high)``: the interval ``output(f)`` can reach; a strategy without one is described by
    #: the two flags above (see ``reconstruction_range``)
    output_range: tuple[float, float] | None = None

    def output(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cost(self, f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error of ``output(f)``, summed over dimensions, averaged over examples."""
        return (self.output(f) - target).pow(2).sum() / f.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _CrossEntropy(Reconstruction):
    unit_interval_targets = True
    output_range = (0.0, 1.0)

    def output(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(f)

    def cost(self, f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # From the logits: stable where sigmoid(f) saturates at 0 or 1.
        return F.binary_cross_entropy_with_logits(f, target, reduction="sum") / f.shape[0]


@RECONSTRUCTIONS.register("softplus")
class SoftplusReconstruction(Reconstruction):
    output_range = (0.0, math.inf)

    def output(self, f: torch.Tensor) -> torch.Tensor:
        return F.softplus(f)


@RECONSTRUCTIONS.register("linear")
class LinearReconstruction(Reconstruction):
    nonnegative_outputs = False
    output_range = (-math.inf, math.inf)

    def output(self, f: torch.Tensor) -> torch.Tensor:
        return f


@RECONSTRUCTIONS.register("rectifier")
class RectifierReconstruction(Reconstruction):
    output_range = (0.0, math.inf)

    def output(self, f: torch.Tensor) -> torch.Tensor:
        return torch.relu(f)


@RECONSTRUCTIONS.register("sigmoid")
class SigmoidReconstruction(_CrossEntropy):
    pass


@RECONSTRUCTIONS.register("scaled_sigmoid")
class ScaledSigmoidReconstruction(_CrossEntropy):
    scales_inputs = True


def reconstruction_range(reconstruction: Reconstruction | type) -> tuple[float, float]:
    """``(low, high)`` of what a reconstruction (instance or class) can output: its ``output_range``,
    else [0, 1] for cross-entropy (``unit_interval_targets``), [0, inf) if ``nonnegative_outputs``,
    else unbounded."""
    declared = getattr(reconstruction, "output_range", None)
    if declared is not None:
        low, high = declared
        return float(low), float(high)
    if getattr(reconstruction, "unit_interval_targets", False):
        return 0.0, 1.0
    return (0.0, math.inf) if getattr(reconstruction, "nonnegative_outputs", True) else (-math.inf, math.inf)


def paper_reconstruction(activation: nn.Module | type | str) -> str:
    """The paper's reconstruction for a DAE of ``activation`` units (a module, class or registry
    name), from the activation's output range: cross-entropy (``sigmoid``) for units bounded on both
    sides that can be negative (tanh's (-1, 1), mapped onto [0, 1]), ``softplus`` for the others."""
    return "sigmoid" if is_bounded_signed(activation) else "softplus"
