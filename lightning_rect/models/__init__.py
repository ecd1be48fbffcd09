from lightning_rect.models.classifier import SparseMLP
from lightning_rect.models.dae import StackedDAE

__all__ = ["SparseMLP", "StackedDAE"]
from lightning_rect.models.sentiment import StarRatingMLP  # noqa: E402

__all__ += ["StarRatingMLP"]
