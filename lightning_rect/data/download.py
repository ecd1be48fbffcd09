"""One downloader for every data set torchvision does not fetch (NORB, small NORB, Amazon reviews).

``fetch(Remote(...), folder)`` downloads one file:

- into ``<name>.part`` next to its final place, resuming a ``.part`` left by an earlier, interrupted
  run (or a connection dropped during this one) with an HTTP ``Range`` request;
- with a tqdm progress bar on stderr;
- verified before it is used: a published checksum (``md5``, ``sha1`` or ``sha256``) where one
  exists, the expected size where it is known, the size the server announced, and the file's own
  check (gzip, tar, zip or binary-matrix header, a full read of a compressed stream);
- renamed into place (``os.replace``) only after it passed, so a file with the final name is
  always a complete, verified one. A download that fails verification is deleted; one that
  breaks off keeps its ``.part`` (no loader reads ``.part`` files) for the next run to resume.

Every failure raises ``DataFileError`` with one line naming the URL and what to do by hand.
``unpack_archive`` unpacks a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` (or gunzips a ``.gz``) into a
folder through a temporary folder beside it, so a half-unpacked archive never looks complete. A
write that fails for want of room or permission (``DISK_ERRORS``) raises ``StorageError`` saying
so and keeps what was downloaded: the archive, or the ``.part`` of a download.

Base URLs live in the data modules' tables (``norb.VARIANTS[...]["url"]``,
``amazon.files.ARCHIVES``); tests point them at a server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning_rect.errors import DataFileError, StorageError
from lightning_rect.files import CAUSES, move_into_place

CHUNK = 1 << 20
#: Attempts per file within one call; each one after the first resumes with a Range request.
ATTEMPTS = 4
TIMEOUT_S = 60.0
USER_AGENT = "lightning-rect-downloader"
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError)


def disk_error(err: BaseException) -> str | None:
    """What a full or unwritable disk did to a write (the one table of such causes, ``files.CAUSES``: the
    fix is room or permission, not a new copy), or None for any other error."""
    return CAUSES.get(err.errno) if isinstance(err, OSError) and err.errno is not None else None


class CorruptDownload(Exception):
    """Raised by a ``Remote.check``: the downloaded file is not what it should be (the message says why)."""


@dataclass(frozen=True)
class Remote:
    """One file to download.

    Args:
        url: where it is.
        name: its file name in the target folder (default: the URL's last part).
        checksum: ``(algorithm, hex digest)`` as published (``"md5"``, ``"sha1"``, ``"sha256"``), or None.
        size: its size in bytes where it is known, or None.
        check: ``check(path)`` raising ``CorruptDownload`` (or ``DataFileError``) if the file's
            content is wrong (header, magic number, a truncated stream); run after size and checksum.
        source: where the checksum or size comes from, for the error message.
        by_hand: what to do after a manual download, for the error message (e.g. how to unpack).
    """

    url: str
    name: str = ""
    checksum: tuple[str, str] | None = None
    size: int | None = None
    check: Callable[[Path], None] | None = None
    source: str = ""
    by_hand: str = ""

    @property
    def filename(self) -> str:
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1]


def _by_hand(remote: Remote, dest: Path) -> str:
    then = f", then {remote.by_hand}" if remote.by_hand else ""
    return f"rerun with download: true, or download it by hand: `curl -L -o {dest} {remote.url}`{then}"


def fetch(remote: Remote, folder: str | os.PathLike, attempts: int = ATTEMPTS, timeout: float = TIMEOUT_S) -> Path:
    """``folder/<remote.filename>``, downloaded and verified unless it is already there."""
    folder = Path(folder)
    dest = folder / remote.filename
    if dest.is_file():
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataFileError(
            f"cannot create {folder} for {remote.url} ({err}); make it writable or set "
            "data.init_args.data_dir to a writable folder"
        ) from err
    part = dest.with_name(dest.name + ".part")
    announced: int | None = None
    last_error: BaseException | None = None
    for _ in range(max(1, attempts)):
        try:
            announced = _download_to(remote, part, timeout) or announced
            last_error = None
            break
        except _ResumeFailed as err:  # the server cannot resume: the .part is useless
            part.unlink(missing_ok=True)
            last_error = err
        except _WriteFailed as failed:  # the disk, not the network: retrying cannot help
            cause = failed.__cause__
            assert isinstance(cause, OSError)  # _download_to raises it from the write's OSError
            kept_bytes = part.stat().st_size if part.is_file() else 0
            raise StorageError(
                f"cannot write {part} ({disk_error(cause)}: {cause.strerror}); the {kept_bytes} bytes received "
                "are kept there: free space or make the folder writable, then rerun (the download "
                "resumes), or set data.init_args.data_dir to another folder"
            ) from cause
        except _NETWORK_ERRORS as err:
            last_error = err
            if isinstance(err, urllib.error.HTTPError) and err.code in (401, 403, 404, 410):
                break
    if last_error is not None:
        kept = (
            f"; the {part.stat().st_size} bytes received are kept in {part} for the next run to resume"
            if part.is_file() and part.stat().st_size
            else ""
        )
        raise DataFileError(
            f"downloading {remote.url} failed ({_describe(last_error)}){kept}; {_by_hand(remote, dest)}"
        ) from last_error
    try:
        _verify(remote, part, announced)
    except (CorruptDownload, DataFileError) as err:
        part.unlink(missing_ok=True)
        raise DataFileError(
            f"the download of {remote.url} is corrupt ({_one_line(err)}) and was deleted; {_by_hand(remote, dest)}"
        ) from err
    move_into_place(part, dest, elsewhere="set data.init_args.data_dir to a folder on another disk")
    return dest


class _ResumeFailed(Exception):
    pass


class _WriteFailed(Exception):
    """Writing the ``.part`` file failed for want of room or permission (the cause is the ``OSError``)."""


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"cannot reach the server: {err.reason}"
    return _one_line(err) or type(err).__name__


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _download_to(remote: Remote, part: Path, timeout: float) -> int | None:
    """Append the rest of ``remote`` to ``part``; the full size the server announced (or None)."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()  # its error page's connection: the error itself is kept (and raised) for its code
        if err.code == 416 and offset:  # asked for bytes past the end: the .part is complete (or wrong)
            return offset
        raise
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and status == 206:
            total = _content_range_total(response.headers.get("Content-Range"), offset)
            mode = "ab"
        elif offset and status == 200:  # the server ignored Range: start over
            offset, total, mode = 0, length, "wb"
        elif not offset and status == 200:
            total, mode = length, "wb"
        else:
            raise _ResumeFailed(f"unexpected HTTP {status} to a request from byte {offset}")
        try:
            with (
                open(part, mode) as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=remote.filename,
                    leave=False,
                ) as bar,
            ):
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
        except OSError as err:
            if disk_error(err) is not None:  # only the file gives these; a socket fails otherwise
                raise _WriteFailed() from err
            raise
        received = part.stat().st_size
        if total is not None and received < total:
            raise ConnectionError(f"the connection closed after {received} of {total} bytes")
        return total


def _content_range_total(value: str | None, offset: int) -> int | None:
    """The full size in ``Content-Range: bytes a-b/total``; a range that does not start at ``offset`` fails."""
    if not value or not value.startswith("bytes "):
        return None
    span, _, total = value[6:].partition("/")
    if span.split("-", 1)[0].strip() != str(offset):
        raise _ResumeFailed(f"the server resumed at the wrong byte ({value})")
    return int(total) if total.strip().isdigit() else None


def _verify(remote: Remote, path: Path, announced: int | None) -> None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise CorruptDownload(f"{size} bytes where {remote.size} were expected{_from(remote)}")
    if announced is not None and size != announced:
        raise CorruptDownload(f"{size} bytes where the server announced {announced}")
    if remote.checksum is not None:
        algorithm, expected = remote.checksum
        digest = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        if digest.hexdigest().lower() != expected.lower():
            raise CorruptDownload(f"{algorithm} {digest.hexdigest()} where {expected} was expected{_from(remote)}")
    if remote.check is not None:
        remote.check(path)


def _from(remote: Remote) -> str:
    return f" (published by {remote.source})" if remote.source else ""


# -- checks of content -----------------------------------------------------------------------------
GZIP_MAGIC = b"\x1f\x8b"


def check_gzip_stream(path: Path) -> None:
    """The whole gzip stream decompresses (CRC and length checked); ``CorruptDownload`` otherwise."""
    _check_magic(path, GZIP_MAGIC, "gzip")
    try:
        with gzip.open(path, "rb") as f:
            while f.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDownload(f"the gzip stream is damaged: {_one_line(err)}") from err


def check_tar(path: Path, required: tuple[str, ...] = ()) -> None:
    """A readable tar archive whose members include every name in ``required``; one whose name (without
    ``.part``) ends in ``.gz``/``.tgz`` must be gzipped."""
    if path.name.removesuffix(".part").endswith((".gz", ".tgz")):
        _check_magic(path, GZIP_MAGIC, "gzip")
    try:
        with tarfile.open(path, "r:*") as tar:
            names = set()
            for member in tar:  # reads the whole stream: a truncated archive fails here
                names.add(member.name.lstrip("./"))
                if member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        while f.read(CHUNK):
                            pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise CorruptDownload(f"it is not a complete tar archive: {_one_line(err)}") from err
    missing = [name for name in required if name not in names]
    if missing:
        raise CorruptDownload(f"the archive lacks {', '.join(missing[:3])}")


def check_zip(path: Path) -> None:
    _check_magic(path, b"PK", "zip")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptDownload(f"it is not a complete zip archive: {_one_line(err)}") from err
    if bad is not None:
        raise CorruptDownload(f"the zip member {bad} is damaged")


def _check_magic(path: Path, magic: bytes, kind: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        raise CorruptDownload(
            f"it does not start with the {kind} magic bytes (first bytes: {head!r}); "
            "the server may have sent an error page"
        )


# -- unpacking -------------------------------------------------------------------------------------
def unpack_archive(archive: str | os.PathLike, folder: str | os.PathLike) -> list[Path]:
    """Unpack ``archive`` into ``folder``; the top-level entries put into place.

    Members are extracted into a temporary folder inside ``folder`` first, then each top-level
    entry is renamed into place; where a top-level folder already exists, only its missing files
    are moved in (existing files are kept). A ``.gz`` that is not a tar is gunzipped to its name
    without ``.gz``. A damaged archive raises ``DataFileError`` and leaves nothing in ``folder``.
    """
    archive, folder = Path(archive), Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.unpack-", dir=folder))
    except OSError as err:
        raise _cannot_write(archive, folder, err) from err
    try:
        try:
            _extract(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            # the folder cannot take the files (disk_error is None for all but an OSError)
            if isinstance(err, OSError) and disk_error(err) is not None and err.filename != str(archive):
                raise _cannot_write(archive, folder, err) from err
            raise DataFileError(
                f"cannot unpack {archive} ({_one_line(err)}); delete it and rerun with download: "
                "true, or unpack it by hand into " + str(folder)
            ) from err
        placed = []
        try:
            for entry in sorted(tmp.iterdir()):
                _merge(entry, folder / entry.name)
                placed.append(folder / entry.name)
        except OSError as err:
            raise _cannot_write(archive, folder, err) from err
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cannot_write(archive: Path, folder: Path, err: OSError) -> StorageError:
    """Unpacking failed on the writing side (full, read-only, no permission): the archive is kept."""
    cause = disk_error(err) or _one_line(err)
    where = f" ({err.filename})" if err.filename else ""
    return StorageError(
        f"cannot unpack {archive} into {folder}: {cause}{where}; the archive is kept: free space or "
        f"make {folder} writable, then rerun, or unpack it by hand into a folder with room and set "
        "data.init_args.data_dir there"
    )


def _extract(archive: Path, into: Path) -> None:
    name = archive.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise zipfile.BadZipFile(f"unsafe member path {member!r}")
            z.extractall(into)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")  # refuses absolute paths, '..', devices
    elif name.endswith(".gz"):
        with gzip.open(archive, "rb") as src, open(into / name[:-3], "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    else:
        raise tarfile.TarError(f"unknown archive type: {name}")


def _merge(src: Path, dest: Path) -> None:
    if not dest.exists():
        os.replace(src, dest)
    elif src.is_dir() and dest.is_dir():
        for child in src.iterdir():
            _merge(child, dest / child.name)
