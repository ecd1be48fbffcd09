"""Readers for the two binary array formats of the data sets: NORB's "binary matrix" files
(``*.mat`` / ``*.mat.gz``; not MATLAB files) and the IDX files of MNIST and EMNIST.

Every damaged file is reported by name, with what is wrong (truncated, wrong magic number, ...)
and the fix: delete it, then download or copy it again.

NORB binary matrix files:

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


def redownload(source: str = "") -> str:
    """The fix for a damaged data file: ``source`` says where to get it (a URL, or a hint such as
    "set `data.init_args.download: true`, or copy it from https://...")."""
    return f"delete it, then download or copy it again{' (' + source + ')' if source else ''}"


class BinaryMatrix:
    """An open binary matrix file: ``dtype`` and ``shape`` from its header, data read on demand."""

    def __init__(self, path: str | os.PathLike, source: str = "") -> None:
        self.path = Path(path)
        self.fix = redownload(source)
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
                                f"reading the {what} ({err}); {self.fix}") from err
        if len(data) < nbytes:
            raise DataFileError(f"{self.path} is truncated: the {what} needs {nbytes} bytes but only "
                                f"{len(data)} remain; {self.fix}")
        return data

    def _read_header(self) -> tuple[np.dtype, tuple[int, ...]]:
        magic, ndim = struct.unpack("<iI", self._read_exact(8, "header"))
        magic &= 0xFFFFFFFF
        if magic not in MAGIC_DTYPES:
            known = ", ".join(f"0x{m:08X} ({d.name})" for m, d in MAGIC_DTYPES.items())
            raise DataFileError(f"{self.path} has the wrong magic number 0x{magic:08X}: it is not a NORB "
                                f"binary matrix file (expected one of {known}); {self.fix}")
        if not 1 <= ndim <= _MAX_RANK:
            raise DataFileError(f"{self.path} has an invalid rank {ndim} in its header (expected 1..{_MAX_RANK}); "
                                f"the file is corrupt; {self.fix}")
        dims = struct.unpack(f"<{max(3, ndim)}i", self._read_exact(4 * max(3, ndim), "header dimensions"))
        shape = tuple(dims[:ndim])
        if any(d < 0 for d in shape):
            raise DataFileError(f"{self.path} has negative dimensions {shape} in its header: the file is corrupt; "
                                f"{self.fix}")
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
                                f"{actual}; {self.fix}")
        if actual > self.data_bytes:
            raise DataFileError(f"{self.path} is {actual - self.data_bytes} bytes longer than its header "
                                f"announces (shape {self.shape}, {self.dtype.name}); it is not a valid binary "
                                f"matrix file; {self.fix}")

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
                                f"{self.fix}") from err
        if extra:
            raise DataFileError(f"{self.path} holds more data than its header announces (shape {self.shape}, "
                                f"{self.dtype.name}): it is not a valid binary matrix file; {self.fix}")

    def read_all(self) -> np.ndarray:
        return self.read_rows(self.shape[0] - self.rows_read)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BinaryMatrix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_binary_matrix(path: str | os.PathLike, source: str = "") -> np.ndarray:
    """The whole array stored in ``path`` (``.mat`` or ``.mat.gz``); DataFileError if it is damaged."""
    with BinaryMatrix(path, source) as matrix:
        return matrix.read_all()



# -- IDX (MNIST, EMNIST) --------------------------------------------------------------------------
#: IDX type codes (third byte of the magic number) -> element type; all multi-byte types big endian.
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike, ndim: int, source: str = "") -> np.ndarray:
    """The uint8 array of ``ndim`` dimensions in the IDX file ``path`` (``.gz`` is read compressed).

    MNIST and EMNIST store images as ``0x00000803`` (uint8, 3 dimensions) and labels as
    ``0x00000801`` (uint8, 1 dimension), big endian. A short file, another magic number, another
    rank or a file longer than its header announces raises ``DataFileError`` naming the file, what
    is wrong, and ``redownload(source)``.
    """
    path = Path(path)
    fix = redownload(source)
    expected = 0x0800 | ndim
    try:
        raw = gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
    except gzip.BadGzipFile as err:
        raise DataFileError(f"{path} is not a gzip file although its name ends in .gz ({err}); {fix}") from err
    except (EOFError, zlib.error) as err:
        raise DataFileError(f"{path} is truncated or corrupt: the gzip stream broke off ({err}); {fix}") from err
    if len(raw) < 4:
        raise DataFileError(f"{path} is truncated: it holds {len(raw)} bytes, not even the 4-byte IDX magic "
                            f"number; {fix}")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected:
        what = ("an IDX file of another kind" if magic >> 16 == 0 and raw[2] in IDX_DTYPES else "not an IDX file")
        raise DataFileError(f"{path} has the wrong magic number 0x{magic:08X} (expected 0x{expected:08X}, uint8 "
                            f"with {ndim} dimension{'s' if ndim > 1 else ''}): it is {what}; {fix}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path} is truncated: its header needs {header} bytes but the file holds "
                            f"{len(raw)}; {fix}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - header
    if actual < size:
        raise DataFileError(f"{path} is truncated: its header announces a uint8 array of shape {shape} "
                            f"({size} bytes of data) but the file holds only {actual}; {fix}")
    if actual > size:
        raise DataFileError(f"{path} is {actual - size} bytes longer than its header announces (shape {shape}): "
                            f"it is not a valid IDX file; {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()
