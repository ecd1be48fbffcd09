"""Tiny image data sets in each data set's real file format, and damaged copies of them.

Test-only: the package only reads these files. CIFAR10: Python-2-style pickles in
``cifar-10-batches-py/``; MNIST and EMNIST: uncompressed IDX files under ``MNIST/raw/`` and
``EMNIST/raw/`` as torchvision lays them out. Each example carries an id in its pixels, so tests can
check that splits never share an example. (NORB's writer is ``norb_files.py``.)
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR_PER_BATCH, CIFAR_TEST = 6, 20
EMNIST_TRAIN, EMNIST_TEST = 124, 60
MNIST_TRAIN, MNIST_TEST = 30, 10


def write_cifar(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    next_id = 0
    for name, n in [(f"data_batch_{i}", CIFAR_PER_BATCH) for i in range(1, 6)] + [("test_batch", CIFAR_TEST)]:
        data = np.random.default_rng(next_id).integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(next_id, next_id + n)  # red channel, top-left pixel: the example's id
        entry = {
            b"batch_label": name.encode(),
            b"labels": [i % 10 for i in range(n)],
            b"data": data,
            b"filenames": [f"img_{next_id + i}.png".encode() for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        next_id += n
    meta = {
        b"label_names": [
            b"airplane",
            b"automobile",
            b"bird",
            b"cat",
            b"deer",
            b"dog",
            b"frog",
            b"horse",
            b"ship",
            b"truck",
        ],
        b"num_cases_per_batch": CIFAR_PER_BATCH,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an IDX file: magic ``0x0000080<ndim>``, big-endian dimensions, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.write_bytes(struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes())


def write_emnist(root: Path) -> None:
    """Uncompressed IDX files in ``EMNIST/raw``. Each stored image has ink in row ``label % 20 + 4``,
    i.e. (EMNIST stores images transposed) a vertical bar in that column of the upright image."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n in (("train", EMNIST_TRAIN), ("test", EMNIST_TEST)):
        labels = (np.arange(n) * 7 + (part == "test")) % 62
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[np.arange(n), labels % 20 + 4, 6:22] = 255
        write_idx(raw / f"emnist-byclass-{part}-images-idx3-ubyte", images)
        write_idx(raw / f"emnist-byclass-{part}-labels-idx1-ubyte", labels)


def write_mnist(root: Path) -> None:
    """The four MNIST IDX files in ``MNIST/raw`` with ``MNIST_TRAIN`` / ``MNIST_TEST`` images; image
    ``k`` (train, then test) has pixel (0, 0) = k and label ``k % 10``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    next_id = 0
    for part, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        ids = np.arange(next_id, next_id + n)
        next_id += n
        images = np.random.default_rng(next_id).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = ids
        write_idx(raw / f"{part}-images-idx3-ubyte", images)
        write_idx(raw / f"{part}-labels-idx1-ubyte", ids % 10)


def truncate(path: Path, keep: int) -> Path:
    """Cut ``path`` to its first ``keep`` bytes (a negative ``keep`` drops that many from the end)."""
    path.write_bytes(path.read_bytes()[:keep])
    return path
