"""``precomputed_signature``: spares Lightning an ``inspect`` call at every training step."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

Step = TypeVar("Step", bound=Callable)


def precomputed_signature(step: Step) -> Step:
    """Attach ``step``'s signature to it once, as ``__signature__``.

    Lightning's training loop asks, at every batch, whether ``training_step`` takes ``batch_idx``
    (``inspect.getfullargspec`` in ``_TrainingEpochLoop._build_kwargs``). Building the signature
    from the code object each time measured about 40 us per step at minibatch 100 on 2 CPU cores;
    ``inspect`` returns a ``__signature__`` it finds as it is. A subclass that overrides the step
    simply does without.
    """
    step.__signature__ = inspect.signature(step)
    return step
