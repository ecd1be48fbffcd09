from lightning_rect.models.classifier import SparseMLP
from lightning_rect.models.dae import StackedDAE
from lightning_rect.models.sentiment import StarRatingMLP

__all__ = ["SparseMLP", "StackedDAE", "StarRatingMLP"]
