"""lightning_rect: Deep Sparse Rectifier Neural Networks (Glorot, Bordes, Bengio 2011) in PyTorch Lightning.

The public names are imported when first used, not when the package is: ``python -m lightning_rect``
then starts in ``__main__`` without torch, and can say in one line that there is too little memory to
import it (``ulimit -v``) instead of a traceback.
"""

from importlib import import_module
from typing import TYPE_CHECKING

#: The one version of the package (pyproject.toml reads it); every results.json records it.
__version__ = "0.2.0"

#: public name -> the module that defines it
_EXPORTS = {
    "ACTIVATIONS": "lightning_rect.activations",
    "Encoder": "lightning_rect.encoder",
    "SparseMLP": "lightning_rect.models",
    "StackedDAE": "lightning_rect.models",
    "StarRatingMLP": "lightning_rect.models",
    "NOISE": "lightning_rect.noise",
    "RECONSTRUCTIONS": "lightning_rect.reconstruction",
    "Registry": "lightning_rect.registry",
}

__all__ = ["ACTIVATIONS", "NOISE", "RECONSTRUCTIONS", "Encoder", "Registry", "SparseMLP", "StackedDAE", "StarRatingMLP"]
assert sorted(__all__) == sorted(_EXPORTS)  # one list, read by tools (ruff, IDEs) as a literal

if TYPE_CHECKING:
    from lightning_rect.activations import ACTIVATIONS
    from lightning_rect.encoder import Encoder
    from lightning_rect.models import SparseMLP, StackedDAE, StarRatingMLP
    from lightning_rect.noise import NOISE
    from lightning_rect.reconstruction import RECONSTRUCTIONS
    from lightning_rect.registry import Registry


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'lightning_rect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
