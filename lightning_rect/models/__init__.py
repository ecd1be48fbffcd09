from lightning_rect.models.classifier import SparseMLP

__all__ = ["SparseMLP"]
