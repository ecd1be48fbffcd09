"""Corruption processes for denoising auto-encoders, by name.

Each takes the clean input and a ``torch.Generator`` (seeded by the model, so a resumed run draws
the same noise as an uninterrupted one) and returns a corrupted copy.
"""

from __future__ import annotations

import math

import torch

from lightning_rect.errors import ConfigError
from lightning_rect.registry import Registry

NOISE: Registry = Registry("noise", "lightning_rect.noise")


def _check_rate(setting: str, value: object) -> float:
    """``value`` as a float if it is a probability in [0, 1), else a ``ConfigError`` naming ``setting``."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < 1):
        raise ConfigError(f"{setting} must be in [0, 1), got {value!r}")
    return float(value)


class Noise:
    def __init__(self, level: float = 0.25) -> None:
        self.level = _check_rate("noise_level", level)

    def _draw(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(level={self.level})"


@NOISE.register("masking")
class Masking(Noise):
    """Each input is set to 0 with probability ``level``; kept inputs are NOT rescaled (not dropout)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.level == 0:
            return x
        return x * (self._draw(x, generator) >= self.level)


@NOISE.register("salt_and_pepper")
class SaltAndPepper(Noise):
    """The paper's first-layer noise for binary bag-of-words inputs, with two separate rates.

    Each present (non-zero) input is set to 0 with probability ``level``; each absent (zero) input
    is set to 1 with probability ``switch_on``; nothing else changes. The rates are separate because
    a review holds few of the vocabulary's words: on a 5000-word bag of ~30 present words, one
    symmetric rate of 0.25 would switch on ~620 absent words and drown the review. ``switch_on``
    defaults to 0.005, the small rate of the authors' library (glorotxa/DeepANN) for text.

    Non-binary inputs (e.g. a scaled rectifier layer below): "present" means non-zero, so a
    non-zero value is kept or set to 0, and a zero is kept or set to 1.
    """

    def __init__(self, level: float = 0.25, switch_on: float = 0.005) -> None:
        super().__init__(level)
        self.switch_on = _check_rate("switch_on", switch_on)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.level == 0 and self.switch_on == 0:
            return x
        u = self._draw(x, generator)  # one draw per input: present ones use it to drop, absent ones to switch on
        present = x != 0
        dropped = present & (u < self.level)
        switched_on = ~present & (u < self.switch_on)
        return torch.where(dropped | switched_on, switched_on.to(x.dtype), x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(level={self.level}, switch_on={self.switch_on})"
