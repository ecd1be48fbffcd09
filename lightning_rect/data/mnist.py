"""MNIST from torchvision's files (``MNIST/raw/*-idx?-ubyte``, plain or ``.gz``), with the paper's
50k / 10k / 10k split.

The IDX files are read here (``formats.read_idx``) rather than through ``torchvision.datasets.MNIST``,
whose reader answers a damaged file with a bare ``AssertionError`` or "not found": here the error
names the file, what is wrong with it and the fix. torchvision is still used to download them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lightning_rect.data.base import InMemoryDataModule, Split
from lightning_rect.data.batches import Affine
from lightning_rect.data.formats import read_idx, redownload
from lightning_rect.errors import DataFileError

MNIST_URL = "https://yann.lecun.com/exdb/mnist/"
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
        raw = Path(self.data_dir).resolve() / "MNIST" / "raw"
        found = {name: _idx_file(raw, name) for name in MNIST_FILES}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise DataFileError(
                f"MNIST files not found in {raw} (missing: {', '.join(missing)}). "
                "Set `data.init_args.download: true` to fetch them with torchvision, or copy the four "
                f"idx files from {MNIST_URL} into that folder."
            )
        source = f"set `data.init_args.download: true`, or copy it from {MNIST_URL}"
        (train_x, train_y), (test_x, test_y) = (
            read_images_and_labels(found[f"{part}-images-idx3-ubyte"], found[f"{part}-labels-idx1-ubyte"], 10, source)
            for part in ("train", "t10k"))
        return {
            "train": (train_x[:50_000], train_y[:50_000]),
            "val": (train_x[50_000:], train_y[50_000:]),
            "test": (test_x, test_y),
        }


def _idx_file(raw: Path, name: str) -> Path | None:
    """``raw/name``, or ``raw/name.gz`` when only the compressed file is there."""
    for path in (raw / name, raw / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_images_and_labels(images: Path, labels: Path, num_classes: int, source: str) -> Split:
    """uint8 ``(n, rows, cols)`` images and int64 labels from a pair of IDX files, checked against
    each other; DataFileError naming the damaged file and the fix (MNIST and EMNIST share it)."""
    x = read_idx(images, ndim=3, source=source)
    y = read_idx(labels, ndim=1, source=source)
    if len(x) != len(y):
        raise DataFileError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels: one of them is "
                            f"from another download or damaged; {redownload(source)} (both files)")
    if len(y) and int(y.max()) >= num_classes:
        raise DataFileError(f"{labels} holds label {int(y.max())} outside 0..{num_classes - 1}: it is a labels file "
                            f"of another data set or split; {redownload(source)}")
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
