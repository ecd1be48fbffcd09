"""LightningDataModules: whole splits in memory as tensors, one file per data set family."""

from lightning_rect.data.amazon import AmazonReviewsDataModule
from lightning_rect.data.base import InMemoryDataModule
from lightning_rect.data.cifar10 import CIFAR10DataModule
from lightning_rect.data.digits import DigitsDataModule
from lightning_rect.data.mnist import MNISTDataModule
from lightning_rect.data.nistp import NISTPDataModule
from lightning_rect.data.norb import NORBDataModule

__all__ = [
    "AmazonReviewsDataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "NISTPDataModule",
    "NORBDataModule",
]
