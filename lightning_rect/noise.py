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


class Noise:
    def __init__(self, level: float = 0.25) -> None:
        if not (isinstance(level, (int, float)) and math.isfinite(level) and 0 <= level < 1):
            raise ConfigError(f"noise_level must be in [0, 1), got {level!r}")
        self.level = float(level)

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
    """Each input is corrupted with probability ``level``: set to 0 or to 1 with equal chance.

    The paper's first-layer noise for binary bag-of-words inputs.
    """

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.level == 0:
            return x
        u = self._draw(x, generator)
        # u < level/2 -> 0 (pepper), level/2 <= u < level -> 1 (salt), else unchanged.
        salt = (u >= self.level / 2) & (u < self.level)
        return torch.where(u < self.level, salt.to(x.dtype), x)
