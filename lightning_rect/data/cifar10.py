"""CIFAR10 from torchvision's ``cifar-10-batches-py`` files, with the paper's 50k / 5k / 5k split.

The paper splits the 10,000 test images in two: here a permutation fixed with seed 0 (independent
of the run's seed) gives the first 5,000 to validation and the other 5,000 to test.

The pickles are read here rather than through ``torchvision.datasets.CIFAR10``: torchvision checks
each file's MD5 and answers any mismatch with one generic "not found or corrupted", while reading
them directly lets the error name the file and what is wrong with it (and lets tests use tiny files
in the same format). torchvision is still used to download them.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from lightning_rect.checks import check_positive_int
from lightning_rect.data.base import InMemoryDataModule, Split, fixed_split
from lightning_rect.data.batches import Affine
from lightning_rect.data.formats import redownload
from lightning_rect.errors import ConfigError, DataFileError

CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
#: A batch file holds 10,000 images, 31 MB; a pickle is read whole, so a far larger file is refused unread.
MAX_BATCH_BYTES = 64 << 20


class CIFAR10DataModule(InMemoryDataModule):
    """32x32 colour images as 3072-vectors (channel-major: the red plane, then green, then blue) in [0, 1].

    Images stay uint8 in memory, exactly as stored in the pickles, and are scaled one batch at a time.

    Args:
        data_dir: folder holding ``cifar-10-batches-py/``.
        download: let torchvision download and unpack the files if they are missing (needs internet).
        val_size: test images given to validation (the paper: 5,000); the rest are the test set.
    """

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int = 5000,
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        labeled_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        check_positive_int("CIFAR10 val_size", val_size)
        self.data_dir = data_dir
        self.download = download
        self.val_size = val_size
        self.input_size = 3 * 32 * 32
        self.num_classes = 10
        self.transform = Affine(scale=1 / 255)

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import CIFAR10

            CIFAR10(self.data_dir, train=True, download=True)

    def data_source(self) -> str:
        return str((Path(self.data_dir) / CIFAR_FOLDER).resolve())

    def load_splits(self) -> dict[str, Split]:
        folder = Path(self.data_dir) / CIFAR_FOLDER
        missing = [name for name in TRAIN_FILES + [TEST_FILE] if not (folder / name).exists()]
        if missing:
            raise DataFileError(
                f"CIFAR10 files not found in {folder.resolve()} (missing: {', '.join(missing)}). Set "
                "`data.init_args.download: true` to fetch them with torchvision, or unpack "
                f"cifar-10-python.tar.gz from {CIFAR_URL} into {Path(self.data_dir).resolve()}."
            )
        train = [read_batch(folder / name) for name in TRAIN_FILES]
        x = torch.cat([b[0] for b in train])
        y = torch.cat([b[1] for b in train])
        test_x, test_y = read_batch(folder / TEST_FILE)
        if self.val_size >= len(test_y):
            raise ConfigError(
                f"CIFAR10 val_size={self.val_size} leaves no test images (the test batch holds {len(test_y)})"
            )
        val, test = fixed_split(len(test_y), [self.val_size, len(test_y) - self.val_size], seed=0)
        return {"train": (x, y), "val": (test_x[val], test_y[val]), "test": (test_x[test], test_y[test])}


def read_batch(path: Path) -> Split:
    """One CIFAR10 pickle -> uint8 ``(n, 3072)`` images and int64 labels; DataFileError if damaged.

    The files were written by Python 2, so their keys come back as bytes (``b"data"``); str keys
    (files re-pickled under Python 3) are accepted too.
    """
    fix = redownload(f"set `data.init_args.download: true`, or unpack cifar-10-python.tar.gz from {CIFAR_URL}")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataFileError(f"cannot read {path}: {err.strerror or err}; {fix}") from err
    if size > MAX_BATCH_BYTES:
        raise DataFileError(
            f"{path} is not a CIFAR10 batch: it holds {size:,} bytes, a batch about 31 MB (10,000 images); {fix}"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        struct.error,
        MemoryError,
    ) as err:
        raise DataFileError(f"{path} {_what_is_wrong(head, err)}; {fix}") from err
    except OSError as err:  # a folder in its place, no permission to read it
        raise DataFileError(f"cannot read {path}: {err.strerror or err}; {fix}") from err
    if not isinstance(entry, dict):
        raise DataFileError(f"{path} is not a CIFAR10 batch: it holds a {type(entry).__name__}, not a dict; {fix}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise DataFileError(
            f"{path} is not a CIFAR10 batch: it lacks the 'data' or 'labels' entry "
            f"(keys: {sorted(entry)}; CIFAR100 files use 'fine_labels' and are not supported); {fix}"
        )
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFileError(
            f"{path} is not a CIFAR10 batch: 'data' is a {data.dtype} array of shape {data.shape} "
            f"with {len(labels)} labels, not uint8 of shape (n, 3072) with n labels; {fix}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(f"{path} holds labels outside 0..9 (is it a CIFAR100 file?); {fix}")
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels.astype(np.int64))


def _what_is_wrong(head: bytes, err: BaseException) -> str:
    """What a file that fails to unpickle is: empty, truncated, no pickle at all, or corrupt."""
    if not head:
        return "is empty (0 bytes)"
    if head == b"\x1f\x8b":
        return "is a gzip file, not a pickle (the downloaded archive? unpack it instead)"
    if head == b"PK":
        return "is a zip file, not a pickle"
    if head[:1] == b"<":
        return "is not a pickle: it looks like an HTML page (a failed download?)"
    if head[:1] == b"\x00":
        return "is not a pickle: it starts with zero bytes (a write that never finished?)"
    if isinstance(err, EOFError) or "truncated" in str(err):
        return f"is truncated ({type(err).__name__}: {err})"
    if head[:1] != b"\x80":
        return f"is not a pickle (it starts with {head!r}; {type(err).__name__}: {err})"
    return f"is corrupt: not a readable CIFAR10 pickle ({type(err).__name__}: {err})"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a data file cannot make us import and call arbitrary code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("__builtin__", "bytes"),
        ("builtins", "bytes"),
    }  # bytes(): how protocol 2 stores b"" (empty arrays)

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR10 file")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")  # numpy 2 renamed the module
        return super().find_class(module, name)
