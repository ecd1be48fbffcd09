"""Files written whole or not at all, and one line when the disk refuses.

``atomic_write(path)`` hands out a temporary file in the destination folder; on leaving the block
it is flushed, fsynced and renamed over ``path`` (``os.replace``: atomic within one file system), so
a reader sees the old file or the new one, never half of one. Any failure removes the temporary
file and, when the cause is the file system (no space, read-only, no permission), raises one
``StorageError`` line naming the path, the cause and a fix. The temporary file is locked
(``flock``) while it is written: a later write of the same path removes the ones whose writer was
killed, and leaves those still being written.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from glob import escape
from pathlib import Path
from typing import IO, Any

from lightning_rect.errors import LightningRectError, StorageError

#: What an ``OSError`` of the file system means, in the words of the one-line errors.
CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_error(
    path: str | os.PathLike, err: OSError, elsewhere: str = "write it to another folder", kept: str = ""
) -> StorageError:
    """``err`` as one line: ``cannot write <path>: <cause>; [<kept>; ]<fix>``; ``elsewhere``: how to write elsewhere."""
    known = CAUSES.get(err.errno) if err.errno is not None else None
    cause = known or (err.strerror or str(err)).lower()
    folder = Path(path).parent
    fix = (
        f"free some space on the disk of {folder}, or {elsewhere}"
        if err.errno in (errno.ENOSPC, errno.EDQUOT)
        else f"make {folder} writable, or {elsewhere}"
    )
    return StorageError(f"cannot write {path}: {cause}; {kept + '; ' if kept else ''}{fix}")


def os_error_in(err: BaseException | None) -> OSError | None:
    """The ``OSError`` behind ``err`` (torch.save, for one, turns a failed write into a ``RuntimeError``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and not isinstance(err, LightningRectError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", elsewhere: str = "write it to another folder"
) -> Iterator[IO]:
    """``with atomic_write(path) as file: ...``: ``path`` holds what was written once the block ends,
    or is unchanged."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
        text: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with open(fd, mode, **text) as file:
            with suppress(OSError):  # a file system without locks: only stale temporaries stay
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # in use: remove_stale_temporaries leaves it alone
            yield file
            file.flush()
            os.fsync(file.fileno())
        replace(tmp, path)
        tmp = None
    except LightningRectError:
        raise
    except Exception as err:
        cause = os_error_in(err)
        if cause is None:
            raise
        raise storage_error(path, cause, elsewhere, kept="any earlier file there is unchanged") from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.remove(tmp)


def write_atomically(path: str | os.PathLike, data: str | bytes, elsewhere: str = "write it to another folder") -> None:
    """``path`` holds ``data`` (text is written as UTF-8), or is unchanged and a ``StorageError`` says why."""
    with atomic_write(path, "wb" if isinstance(data, bytes) else "w", elsewhere) as file:
        file.write(data)


def move_into_place(
    src: str | os.PathLike, dest: str | os.PathLike, elsewhere: str = "write it to another folder"
) -> None:
    """Rename a finished file (such as a download's ``.part``) to ``dest``, durably; one line if that fails."""
    try:
        with open(src, "rb+") as file:
            os.fsync(file.fileno())
        replace(src, dest)
    except OSError as err:
        raise storage_error(dest, err, elsewhere) from None


def replace(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """``os.replace``, then the folder fsynced so that the rename itself survives a crash (where folders open)."""
    os.replace(src, dest)
    with suppress(OSError):
        fd = os.open(Path(dest).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of ``path`` left by a writer that was killed (unlocked ones; a live writer holds its lock)."""
    for stale in path.parent.glob(f".{escape(path.name)}.*.tmp"):
        with suppress(OSError), open(stale, "rb") as file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it (or the file system has no locks: leave it)
                continue
            stale.unlink()


def portable_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working folder when it lies inside it (or beside it: ``../shared/data``), so
    that what a run records names no folder of the machine it ran on; else as it is."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        relative = Path(os.path.relpath(path, Path.cwd()))
    except ValueError:  # another drive
        return path.as_posix()
    return relative.as_posix() if relative.parts[:2] != ("..", "..") else path.as_posix()
