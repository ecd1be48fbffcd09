"""MNIST from torchvision's files (``MNIST/raw/*-idx?-ubyte``, plain or ``.gz``), with the paper's
50k / 10k / 10k split.

The IDX files are read here (``formats.IdxFile``) rather than through ``torchvision.datasets.MNIST``,
whose reader answers a damaged file with a bare ``AssertionError`` or "not found" and decompresses a
``.gz`` whole whatever its header says: here each header is checked against MNIST's shape and
published sizes before any data is read, and the error names the file, what is wrong with it and
the fix. torchvision is still used to download them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lightning_rect.checks import check_positive_int
from lightning_rect.data.base import InMemoryDataModule, Split
from lightning_rect.data.batches import Affine
from lightning_rect.data.formats import IdxFile, redownload
from lightning_rect.errors import ConfigError, DataFileError

MNIST_URL = "https://yann.lecun.com/exdb/mnist/"
MNIST_FOLDER = "MNIST"
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
#: Images per file as published: a header announcing more is corrupt (and is not read).
MNIST_SIZES = {"train": 60_000, "t10k": 10_000}


class MNISTDataModule(InMemoryDataModule):
    """The last ``val_size`` (10,000) training images validate, the others (50,000) train, the 10,000
    test images test.

    Images stay uint8 in memory and are scaled to [0, 1] one batch at a time.

    Args:
        data_dir: folder holding ``MNIST/raw/`` in torchvision's layout.
        download: let torchvision download the files if they are missing (needs internet).
        val_size: images at the end of the training file that validate (the paper: 10,000).
    """

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int = 10_000,
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        labeled_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        check_positive_int("MNIST val_size", val_size)
        self.data_dir = data_dir
        self.download = download
        self.val_size = val_size
        self.input_size = 784
        self.num_classes = 10
        self.transform = Affine(scale=1 / 255)

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import MNIST

            MNIST(self.data_dir, train=True, download=True)
            MNIST(self.data_dir, train=False, download=True)

    def raw_dir(self) -> Path:
        return Path(self.data_dir).resolve() / MNIST_FOLDER / "raw"

    def data_source(self) -> str:
        return str(self.raw_dir())

    def load_splits(self) -> dict[str, Split]:
        raw = self.raw_dir()
        found = {name: _idx_file(raw, name) for name in MNIST_FILES}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise DataFileError(
                f"MNIST files not found in {raw} (missing: {', '.join(missing)}). "
                "Set `data.init_args.download: true` to fetch them with torchvision, or copy the four "
                f"idx files from {MNIST_URL} into that folder."
            )
        paths = {name: path for name, path in found.items() if path is not None}  # every one, by now
        source = f"set `data.init_args.download: true`, or copy it from {MNIST_URL}"
        (train_x, train_y), (test_x, test_y) = (
            read_images_and_labels(
                paths[f"{part}-images-idx3-ubyte"],
                paths[f"{part}-labels-idx1-ubyte"],
                10,
                source,
                max_images=MNIST_SIZES[part],
            )
            for part in ("train", "t10k")
        )
        if self.val_size >= len(train_y):
            raise ConfigError(
                f"MNIST val_size={self.val_size} leaves no training images: "
                f"{found['train-images-idx3-ubyte']} holds {len(train_y)} images (the published file "
                f"holds {MNIST_SIZES['train']:,}): if it is short, {redownload(source)}; else lower "
                "data.init_args.val_size"
            )
        cut = len(train_y) - self.val_size
        return {
            "train": (train_x[:cut], train_y[:cut]),
            "val": (train_x[cut:], train_y[cut:]),
            "test": (test_x, test_y),
        }


def _idx_file(raw: Path, name: str) -> Path | None:
    """``raw/name``, or ``raw/name.gz`` when only the compressed file is there."""
    for path in (raw / name, raw / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_images_and_labels(
    images: Path, labels: Path, num_classes: int, source: str, max_images: int, image_shape: tuple[int, int] = (28, 28)
) -> Split:
    """uint8 ``(n, rows, cols)`` images and int64 labels from a pair of IDX files; DataFileError naming
    the damaged file and the fix (MNIST and EMNIST share it). Both headers are checked (the image
    shape, at most ``max_images`` entries, as many labels as images) before any data is read."""
    with (
        IdxFile(images, 3, source, image_shape, max_images) as image_file,
        IdxFile(labels, 1, source, None, max_images) as label_file,
    ):
        if image_file.shape[0] != label_file.shape[0]:
            raise DataFileError(
                f"{images} holds {image_file.shape[0]} images but {labels} holds "
                f"{label_file.shape[0]} labels: one of them is from another download or damaged; "
                f"{redownload(source)} (both files)"
            )
        x, y = image_file.read(), label_file.read()
    if len(y) and int(y.max()) >= num_classes:
        raise DataFileError(
            f"{labels} holds label {int(y.max())} outside 0..{num_classes - 1}: it is a labels file "
            f"of another data set or split; {redownload(source)}"
        )
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
