"""Reader for the NORB "binary matrix" files (``*.mat`` / ``*.mat.gz``; not MATLAB files).

Layout, all little endian: an int32 magic number naming the element type, an int32 rank ``ndim``,
``max(3, ndim)`` int32 dimensions (a vector of length n is stored as ``n 1 1``; only the first
``ndim`` count), then the elements in C order.

The reader checks the header and the length before it hands out data, so a damaged download is
reported as "truncated" or "wrong magic number" with the file's name, not as a numpy reshape error
deep inside the conversion. ``BinaryMatrix.read_rows`` streams the leading axis in chunks, because
one jittered-cluttered NORB file is 680 MB uncompressed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lightning_rect.errors import DataFileError

#: Magic number -> element type (the 0x1E3D4C52 "packed matrix" type is not used by NORB).
MAGIC_DTYPES = {
    0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"),
    0x1E3D4C54: np.dtype("<i4"),
    0x1E3D4C55: np.dtype("u1"),
    0x1E3D4C56: np.dtype("<i2"),
}
_MAX_RANK = 16
_READ_ERRORS = (EOFError, OSError, zlib.error)


class BinaryMatrix:
    """An open binary matrix file: ``dtype`` and ``shape`` from its header, data read on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.compressed = self.path.name.endswith(".gz")
        try:
            self._file: BinaryIO = gzip.open(self.path, "rb") if self.compressed else open(self.path, "rb")
        except FileNotFoundError as err:
            raise DataFileError(f"binary matrix file not found: {self.path}") from err
        self.rows_read = 0
        try:
            self.dtype, self.shape = self._read_header()
            if not self.compressed:
                self._check_length()
        except BaseException:
            self._file.close()
            raise

    # -- header ---------------------------------------------------------------------------------
    def _read_exact(self, nbytes: int, what: str) -> bytes:
        try:
            data = self._file.read(nbytes)
        except gzip.BadGzipFile as err:
            raise DataFileError(f"{self.path} is not a gzip file although its name ends in .gz ({err}); "
                                "rename it without .gz if it is already uncompressed") from err
        except _READ_ERRORS as err:
            raise DataFileError(f"{self.path} is truncated or corrupt: the gzip stream broke off while "
                                f"reading the {what} ({err}); download the file again") from err
        if len(data) < nbytes:
            raise DataFileError(f"{self.path} is truncated: the {what} needs {nbytes} bytes but only "
                                f"{len(data)} remain; download the file again")
        return data

    def _read_header(self) -> tuple[np.dtype, tuple[int, ...]]:
        magic, ndim = struct.unpack("<iI", self._read_exact(8, "header"))
        magic &= 0xFFFFFFFF
        if magic not in MAGIC_DTYPES:
            known = ", ".join(f"0x{m:08X} ({d.name})" for m, d in MAGIC_DTYPES.items())
            raise DataFileError(f"{self.path} has the wrong magic number 0x{magic:08X}: it is not a NORB "
                                f"binary matrix file (expected one of {known}); download the file again")
        if not 1 <= ndim <= _MAX_RANK:
            raise DataFileError(f"{self.path} has an invalid rank {ndim} in its header (expected 1..{_MAX_RANK}); "
                                "the file is corrupt, download it again")
        dims = struct.unpack(f"<{max(3, ndim)}i", self._read_exact(4 * max(3, ndim), "header dimensions"))
        shape = tuple(dims[:ndim])
        if any(d < 0 for d in shape):
            raise DataFileError(f"{self.path} has negative dimensions {shape} in its header; the file is corrupt")
        return MAGIC_DTYPES[magic], shape

    @property
    def header_bytes(self) -> int:
        return 8 + 4 * max(3, len(self.shape))

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def _check_length(self) -> None:
        actual = self.path.stat().st_size - self.header_bytes
        if actual < self.data_bytes:
            raise DataFileError(f"{self.path} is truncated: its header announces a {self.dtype.name} array of "
                                f"shape {self.shape} ({self.data_bytes} bytes of data) but the file holds only "
                                f"{actual}; download the file again")
        if actual > self.data_bytes:
            raise DataFileError(f"{self.path} is {actual - self.data_bytes} bytes longer than its header "
                                f"announces (shape {self.shape}, {self.dtype.name}); it is not a valid binary "
                                "matrix file, download it again")

    # -- data -----------------------------------------------------------------------------------
    def read_rows(self, count: int) -> np.ndarray:
        """The next ``count`` entries along axis 0 (fewer at the end), as a native-endian array."""
        count = min(count, self.shape[0] - self.rows_read)
        row_shape = self.shape[1:]
        nbytes = count * int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        data = self._read_exact(nbytes, f"data of rows {self.rows_read}..{self.rows_read + count - 1}")
        self.rows_read += count
        if self.rows_read == self.shape[0] and self.compressed:
            self._check_gzip_end()
        # astype copies: the result is writable and native-endian (torch.from_numpy wants both).
        return np.frombuffer(data, dtype=self.dtype).astype(self.dtype.newbyteorder("=")).reshape((count, *row_shape))

    def _check_gzip_end(self) -> None:
        try:
            extra = self._file.read(1)
        except _READ_ERRORS as err:
            raise DataFileError(f"{self.path} is corrupt: the gzip stream is damaged after the data ({err}); "
                                "download the file again") from err
        if extra:
            raise DataFileError(f"{self.path} holds more data than its header announces (shape {self.shape}, "
                                f"{self.dtype.name}); it is not a valid binary matrix file, download it again")

    def read_all(self) -> np.ndarray:
        return self.read_rows(self.shape[0] - self.rows_read)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BinaryMatrix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_binary_matrix(path: str | os.PathLike) -> np.ndarray:
    """The whole array stored in ``path`` (``.mat`` or ``.mat.gz``); DataFileError if it is damaged."""
    with BinaryMatrix(path) as matrix:
        return matrix.read_all()

