"""NORB files for tests: the binary matrix writer and tiny data sets with the real names and sizes.

Test-only: the package only reads these files (``lightning_rect.data.formats``).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from lightning_rect.data.formats import MAGIC_DTYPES
from lightning_rect.data.norb import VARIANTS

DTYPE_MAGICS = {dtype: magic for magic, dtype in MAGIC_DTYPES.items()}
#: Pairs per raw file in ``write_norb``'s tiny sets.
PAIRS_PER_FILE = {"jittered_cluttered": {"train": 6, "test": 5}, "small": {"train": 20, "test": 10}}


def write_binary_matrix(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` in the binary matrix format (gzip-compressed if ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in DTYPE_MAGICS:
        raise ValueError(f"binary matrix files store {sorted(d.name for d in DTYPE_MAGICS)}, not {array.dtype}")
    dims = list(array.shape) + [1] * (3 - array.ndim)  # a vector is stored as n 1 1
    header = struct.pack(f"<iI{len(dims)}i", DTYPE_MAGICS[dtype], array.ndim, *dims)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header)
        f.write(array.astype(dtype, copy=False).tobytes())


def write_norb(root: Path, variant: str = "jittered_cluttered", gz: tuple[str, ...] = (), first_id: int = 0) -> None:
    """Every raw file of ``variant`` under ``root``, holding ``PAIRS_PER_FILE`` pairs each.

    Pair ``k`` (counted from ``first_id`` over the training files, then the test files) is
    constant with pixel value ``k`` (area subsampling keeps it) and has label ``k % num_classes``,
    so a test can tell every pair and its label apart after conversion. Stems in ``gz`` are gzipped.
    """
    spec = VARIANTS[variant]
    folder = root / spec["folder"]
    folder.mkdir(parents=True)
    size = spec["raw_size"]
    next_id = first_id
    for part in ("train", "test"):
        for stem in spec[part]:
            n = PAIRS_PER_FILE[variant][part]
            ids = np.arange(next_id, next_id + n)
            next_id += n
            pairs = np.broadcast_to(ids.astype(np.uint8).reshape(n, 1, 1, 1), (n, 2, size, size))
            ext = ".mat.gz" if stem in gz else ".mat"
            write_binary_matrix(folder / f"{stem}-dat{ext}", pairs)
            write_binary_matrix(folder / f"{stem}-cat{ext}", (ids % spec["num_classes"]).astype(np.int32))


def norb_downloads(scratch: Path, variant: str = "jittered_cluttered") -> dict[str, bytes]:
    """The ``.mat.gz`` files of ``write_norb``'s tiny set of ``variant``, by file name, as a server would
    offer them (``scratch`` is a folder to write them in first; it must not exist yet)."""
    spec = VARIANTS[variant]
    write_norb(scratch, variant, gz=tuple(spec["train"] + spec["test"]))
    return {path.name: path.read_bytes() for path in sorted((scratch / spec["folder"]).glob("*.mat.gz"))}
