"""Range checks for configuration values; each failure names the field and what is allowed."""

from __future__ import annotations

import math

from lightning_rect.errors import ConfigError


def check_positive_int(name: str, value: object) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def check_non_negative(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
