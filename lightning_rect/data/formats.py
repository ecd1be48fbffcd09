"""Readers for the two binary array formats of the data sets: NORB's "binary matrix" files
(``*.mat`` / ``*.mat.gz``; not MATLAB files) and the IDX files of MNIST and EMNIST.

Every damaged file is reported by name, with what is wrong (truncated, wrong magic number, ...)
and the fix: delete it, then download or copy it again.

Both formats start with a header announcing the array's shape. The readers check the header
first (magic number, rank, the shape the caller expects, an upper bound on the number of entries
and ``MAX_ARRAY_BYTES``), then read exactly the announced bytes, ``READ_CHUNK`` at a time, into an
array of that size: a file that holds fewer bytes is "truncated", one that holds more (a gzip
stream that goes on) is refused after reading one byte past the end. So a small ``.gz`` whose
header or stream lies costs at most the memory of the array its header may announce, never the
size of its decompressed stream.

NORB binary matrix files:

Layout, all little endian: an int32 magic number naming the element type, an int32 rank ``ndim``,
``max(3, ndim)`` int32 dimensions (a vector of length n is stored as ``n 1 1``; only the first
``ndim`` count), then the elements in C order. ``BinaryMatrix.read_rows`` streams the leading
axis in chunks, because one jittered-cluttered NORB file is 680 MB uncompressed.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from lightning_rect.errors import DataFileError

#: Magic number -> element type (the 0x1E3D4C52 "packed matrix" type is not used by NORB).
MAGIC_DTYPES: dict[int, np.dtype] = {
    0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"),
    0x1E3D4C54: np.dtype("<i4"),
    0x1E3D4C55: np.dtype("u1"),
    0x1E3D4C56: np.dtype("<i2"),
}
_MAX_RANK = 16
_READ_ERRORS = (EOFError, OSError, zlib.error)
#: Largest array any header may announce: more than any file of the supported data sets holds (the
#: largest, a jittered-cluttered NORB -dat file, holds 680 MB; EMNIST byclass training images 547 MB).
MAX_ARRAY_BYTES = 1 << 30
#: Bytes decompressed or read per call: what a read costs beyond the array it fills.
READ_CHUNK = 1 << 20


def redownload(source: str = "") -> str:
    """The fix for a damaged data file: ``source`` says where to get it (a URL, or a hint such as
    "set `data.init_args.download: true`, or copy it from https://...")."""
    return f"delete it, then download or copy it again{' (' + source + ')' if source else ''}"


class DataStream:
    """A data file opened for reading (``.gz``: its decompressed stream), read in bounded chunks."""

    def __init__(self, path: str | os.PathLike, fix: str) -> None:
        self.path = Path(path)
        self.fix = fix
        self.compressed = self.path.name.endswith(".gz")
        try:
            self._file: gzip.GzipFile | io.BufferedReader = (
                gzip.open(self.path, "rb") if self.compressed else open(self.path, "rb")
            )
        except FileNotFoundError as err:
            raise DataFileError(f"data file not found: {self.path}; {fix}") from err
        except OSError as err:  # a folder in its place, no permission to read it
            raise DataFileError(f"cannot read {self.path}: {err.strerror or err}; {fix}") from err

    def stored_bytes(self) -> int | None:
        """The size of an uncompressed file on disk (None for ``.gz``: known only by reading it all)."""
        return None if self.compressed else self.path.stat().st_size

    def read_exact(self, nbytes: int, what: str) -> np.ndarray:
        """Exactly ``nbytes`` bytes as a uint8 array; DataFileError if the file ends (or breaks) first.

        The array is allocated once at its final size; its pages are committed only as data arrives.
        """
        out = np.empty(nbytes, dtype=np.uint8)
        view = out.data  # a memoryview of the array
        filled = 0
        while filled < nbytes:
            got = self.readinto(view[filled : filled + READ_CHUNK], what)
            if not got:
                raise DataFileError(
                    f"{self.path} is truncated: the {what} needs {nbytes} bytes but only {filled} remain; {self.fix}"
                )
            filled += got
        return out

    def readinto(self, buffer: memoryview, what: str) -> int:
        """Fill the start of ``buffer`` (``what`` names the part being read, for errors); 0 at the end."""
        try:
            return self._file.readinto(buffer)
        except gzip.BadGzipFile as err:
            raise DataFileError(
                f"{self.path} is not a gzip file although its name ends in .gz ({err}); "
                "rename it without .gz if it is already uncompressed"
            ) from err
        except _READ_ERRORS as err:
            raise DataFileError(
                f"{self.path} is truncated or corrupt: the gzip stream broke off while "
                f"reading the {what} ({err}); {self.fix}"
            ) from err

    def check_end(self, announced: str) -> None:
        """The stream ends here: one byte more means the file holds more than its header announces
        (reading that byte also checks a gzip stream's CRC and length)."""
        try:
            extra = self._file.read(1)
        except _READ_ERRORS as err:
            raise DataFileError(
                f"{self.path} is corrupt: the gzip stream is damaged after the data ({err}); {self.fix}"
            ) from err
        if extra:
            raise DataFileError(
                f"{self.path} holds more data than its header announces ({announced}): it is not "
                f"a valid data file; {self.fix}"
            )

    def close(self) -> None:
        self._file.close()


def check_announced(
    path: Path,
    shape: tuple[int, ...],
    itemsize: int,
    fix: str,
    item_shape: tuple[int, ...] | None,
    max_items: int | None,
    kind: str,
) -> int:
    """The data bytes a header announces, once its shape passed the caller's expectations:
    ``item_shape`` (the dimensions after the first) and ``max_items`` (entries along the first
    axis; the data set's published size), and ``MAX_ARRAY_BYTES``."""
    if item_shape is not None and tuple(shape[1:]) != tuple(item_shape):
        raise DataFileError(
            f"{path} announces entries of shape {tuple(shape[1:])} in its header, not "
            f"{tuple(item_shape)}: it is not a {kind} of this data set, or it is corrupt; {fix}"
        )
    if max_items is not None and shape and shape[0] > max_items:
        raise DataFileError(
            f"{path} announces {shape[0]:,} entries in its header, more than the {max_items:,} a "
            f"{kind} of this data set holds: its header is corrupt; {fix}"
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise DataFileError(
            f"{path} announces an array of shape {shape} ({nbytes:,} bytes) in its header, more than "
            f"the {MAX_ARRAY_BYTES:,} any supported data file holds: its header is corrupt; {fix}"
        )
    return nbytes


class BinaryMatrix:
    """An open binary matrix file: ``dtype`` and ``shape`` from its header, data read on demand.

    Args:
        path: the ``.mat`` or ``.mat.gz`` file.
        source: where to get it again, for the error messages.
        max_rows: most entries along the first axis the header may announce (None: only
            ``MAX_ARRAY_BYTES`` bounds it).
    """

    def __init__(self, path: str | os.PathLike, source: str = "", max_rows: int | None = None) -> None:
        self.path = Path(path)
        self.fix = redownload(source)
        self.compressed = self.path.name.endswith(".gz")
        self._stream = DataStream(self.path, self.fix)
        self.rows_read = 0
        try:
            self.dtype, self.shape = self._read_header()
            check_announced(self.path, self.shape, self.dtype.itemsize, self.fix, None, max_rows, "binary matrix file")
            if not self.compressed:
                self._check_length()
        except BaseException:
            self._stream.close()
            raise

    # -- header ---------------------------------------------------------------------------------
    def _read_header(self) -> tuple[np.dtype, tuple[int, ...]]:
        magic, ndim = struct.unpack("<iI", self._stream.read_exact(8, "header").tobytes())
        magic &= 0xFFFFFFFF
        if magic not in MAGIC_DTYPES:
            known = ", ".join(f"0x{m:08X} ({d.name})" for m, d in MAGIC_DTYPES.items())
            raise DataFileError(
                f"{self.path} has the wrong magic number 0x{magic:08X}: it is not a NORB "
                f"binary matrix file (expected one of {known}); {self.fix}"
            )
        if not 1 <= ndim <= _MAX_RANK:
            raise DataFileError(
                f"{self.path} has an invalid rank {ndim} in its header (expected 1..{_MAX_RANK}); "
                f"the file is corrupt; {self.fix}"
            )
        dims = struct.unpack(
            f"<{max(3, ndim)}i", self._stream.read_exact(4 * max(3, ndim), "header dimensions").tobytes()
        )
        shape = tuple(dims[:ndim])
        if any(d < 0 for d in shape):
            raise DataFileError(
                f"{self.path} has negative dimensions {shape} in its header: the file is corrupt; {self.fix}"
            )
        return MAGIC_DTYPES[magic], shape

    @property
    def header_bytes(self) -> int:
        return 8 + 4 * max(3, len(self.shape))

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def _announced(self) -> str:
        return f"{'an' if self.dtype.name.startswith('i') else 'a'} {self.dtype.name} array of shape {self.shape}"

    def _check_length(self) -> None:
        stored = self._stream.stored_bytes()
        assert stored is not None  # called for uncompressed files only
        actual = stored - self.header_bytes
        if actual < self.data_bytes:
            raise DataFileError(
                f"{self.path} is truncated: its header announces {self._announced()} "
                f"({self.data_bytes} bytes of data) but the file holds only {actual}; {self.fix}"
            )
        if actual > self.data_bytes:
            raise DataFileError(
                f"{self.path} is {actual - self.data_bytes} bytes longer than its header "
                f"announces (shape {self.shape}, {self.dtype.name}); it is not a valid binary "
                f"matrix file; {self.fix}"
            )

    # -- data -----------------------------------------------------------------------------------
    def read_rows(self, count: int) -> np.ndarray:
        """The next ``count`` entries along axis 0 (fewer at the end), as a native-endian array."""
        count = min(count, self.shape[0] - self.rows_read)
        row_shape = self.shape[1:]
        nbytes = count * int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        data = self._stream.read_exact(nbytes, f"data of rows {self.rows_read}..{self.rows_read + count - 1}")
        self.rows_read += count
        if self.rows_read == self.shape[0] and self.compressed:
            self._stream.check_end(self._announced())
        # Native byte order, for torch.from_numpy; no copy where the file's order is already native.
        return data.view(self.dtype).astype(self.dtype.newbyteorder("="), copy=False).reshape((count, *row_shape))

    def read_all(self) -> np.ndarray:
        return self.read_rows(self.shape[0] - self.rows_read)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> BinaryMatrix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_binary_matrix(path: str | os.PathLike, source: str = "", max_rows: int | None = None) -> np.ndarray:
    """The whole array stored in ``path`` (``.mat`` or ``.mat.gz``); DataFileError if it is damaged."""
    with BinaryMatrix(path, source, max_rows) as matrix:
        return matrix.read_all()


# -- IDX (MNIST, EMNIST) --------------------------------------------------------------------------
#: IDX type codes (third byte of the magic number) -> element type; all multi-byte types big endian.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFile:
    """An open uint8 IDX file of ``ndim`` dimensions: ``shape`` from its header, checked; ``read()``.

    MNIST and EMNIST store images as ``0x00000803`` (uint8, 3 dimensions) and labels as
    ``0x00000801`` (uint8, 1 dimension), big endian. A short file, another magic number, another
    rank, a shape other than ``item_shape`` after the first axis, more than ``max_items`` entries,
    or a file longer than its header announces raises ``DataFileError`` naming the file, what is
    wrong, and ``redownload(source)``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        ndim: int,
        source: str = "",
        item_shape: tuple[int, ...] | None = None,
        max_items: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.fix = redownload(source)
        self._stream = DataStream(self.path, self.fix)
        try:
            self.shape = self._read_header(ndim)
            self.data_bytes = check_announced(self.path, self.shape, 1, self.fix, item_shape, max_items, "file")
            stored = self._stream.stored_bytes()
            if stored is not None:
                self._check_length(stored - 4 - 4 * ndim)
        except BaseException:
            self._stream.close()
            raise

    def _read_header(self, ndim: int) -> tuple[int, ...]:
        head = self._read_head(4)
        if len(head) < 4:
            raise DataFileError(
                f"{self.path} is truncated: it holds {len(head)} bytes, not even the 4-byte IDX magic "
                f"number; {self.fix}"
            )
        magic = struct.unpack(">I", head)[0]
        expected = 0x0800 | ndim
        if magic != expected:
            what = "an IDX file of another kind" if magic >> 16 == 0 and head[2] in IDX_DTYPES else "not an IDX file"
            raise DataFileError(
                f"{self.path} has the wrong magic number 0x{magic:08X} (expected 0x{expected:08X}, "
                f"uint8 with {ndim} dimension{'s' if ndim > 1 else ''}): it is {what}; {self.fix}"
            )
        dims = self._read_head(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DataFileError(
                f"{self.path} is truncated: its header needs {4 + 4 * ndim} bytes but the file holds "
                f"{4 + len(dims)}; {self.fix}"
            )
        return struct.unpack(f">{ndim}I", dims)

    def _read_head(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` header bytes (fewer where the file ends)."""
        head = np.empty(nbytes, dtype=np.uint8)
        filled = 0
        while filled < nbytes and (got := self._stream.readinto(head.data[filled:], "header")):
            filled += got
        return head[:filled].tobytes()

    def _announced(self) -> str:
        return f"a uint8 array of shape {self.shape}"

    def _check_length(self, actual: int) -> None:
        if actual < self.data_bytes:
            raise DataFileError(
                f"{self.path} is truncated: its header announces {self._announced()} "
                f"({self.data_bytes} bytes of data) but the file holds only {actual}; {self.fix}"
            )
        if actual > self.data_bytes:
            raise DataFileError(
                f"{self.path} is {actual - self.data_bytes} bytes longer than its header announces "
                f"(shape {self.shape}): it is not a valid IDX file; {self.fix}"
            )

    def read(self) -> np.ndarray:
        """The whole array, exactly as many bytes as the header announces."""
        data = self._stream.read_exact(self.data_bytes, f"data ({self._announced()})")
        if self._stream.compressed:
            self._stream.check_end(self._announced())
        return data.reshape(self.shape)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> IdxFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_idx(
    path: str | os.PathLike,
    ndim: int,
    source: str = "",
    item_shape: tuple[int, ...] | None = None,
    max_items: int | None = None,
) -> np.ndarray:
    """The uint8 array of ``ndim`` dimensions in the IDX file ``path`` (``.gz`` is read compressed);
    see ``IdxFile`` for the checks."""
    with IdxFile(path, ndim, source, item_shape, max_items) as idx:
        return idx.read()
