"""MNIST through torchvision's files, with the paper's 50k / 10k / 10k split."""

from __future__ import annotations

from pathlib import Path

from lightning_rect.data.base import InMemoryDataModule, Split
from lightning_rect.data.batches import Affine
from lightning_rect.errors import DataFileError

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class MNISTDataModule(InMemoryDataModule):
    """The first 50,000 training images train, the last 10,000 validate, the 10,000 test images test.

    Images stay uint8 in memory and are scaled to [0, 1] one batch at a time.

    Args:
        data_dir: folder holding ``MNIST/raw/`` in torchvision's layout.
        download: let torchvision download the files if they are missing (needs internet).
    """

    def __init__(self, data_dir: str = "data", download: bool = False, batch_size: int = 10,
                 eval_batch_size: int = 1000, labeled_fraction: float = 1.0, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.data_dir = data_dir
        self.download = download
        self.input_size = 784
        self.num_classes = 10
        self.transform = Affine(scale=1 / 255)

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import MNIST

            MNIST(self.data_dir, train=True, download=True)
            MNIST(self.data_dir, train=False, download=True)

    def load_splits(self) -> dict[str, Split]:
        from torchvision.datasets import MNIST

        try:
            train = MNIST(self.data_dir, train=True, download=False)
            test = MNIST(self.data_dir, train=False, download=False)
        except RuntimeError as err:
            raw = Path(self.data_dir).resolve() / "MNIST" / "raw"
            missing = [f for f in MNIST_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
            raise DataFileError(
                f"MNIST files not found in {raw} (missing: {', '.join(missing) or 'unreadable files'}). "
                "Set `data.init_args.download: true` to fetch them with torchvision, or copy the four "
                "idx files from https://yann.lecun.com/exdb/mnist/ into that folder."
            ) from err
        x, y = train.data, train.targets
        return {
            "train": (x[:50_000], y[:50_000]),
            "val": (x[50_000:], y[50_000:]),
            "test": (test.data, test.targets),
        }
