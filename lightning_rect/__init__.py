"""lightning_rect: Deep Sparse Rectifier Neural Networks (Glorot, Bordes, Bengio 2011) in PyTorch Lightning."""

from lightning_rect.activations import ACTIVATIONS
from lightning_rect.encoder import Encoder
from lightning_rect.models import SparseMLP, StackedDAE, StarRatingMLP
from lightning_rect.noise import NOISE
from lightning_rect.reconstruction import RECONSTRUCTIONS
from lightning_rect.registry import Registry

__all__ = ["ACTIVATIONS", "NOISE", "RECONSTRUCTIONS", "Encoder", "Registry", "SparseMLP", "StackedDAE", "StarRatingMLP"]
#: The one version of the package (pyproject.toml reads it); every results.json records it.
__version__ = "0.2.0"
