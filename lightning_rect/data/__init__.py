"""LightningDataModules: whole splits in memory as tensors, one file per data set family."""

from lightning_rect.data.base import InMemoryDataModule
from lightning_rect.data.digits import DigitsDataModule
from lightning_rect.data.mnist import MNISTDataModule

__all__ = ["InMemoryDataModule", "DigitsDataModule", "MNISTDataModule"]
from lightning_rect.data.amazon import AmazonReviewsDataModule  # noqa: E402

__all__ += ["AmazonReviewsDataModule"]
from lightning_rect.data.cifar10 import CIFAR10DataModule  # noqa: E402
from lightning_rect.data.nistp import NISTPDataModule  # noqa: E402
from lightning_rect.data.norb import NORBDataModule  # noqa: E402

__all__ += ["CIFAR10DataModule", "NISTPDataModule", "NORBDataModule"]
