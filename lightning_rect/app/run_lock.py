"""One process at a time in a folder: ``with run_lock(folder): ...``.

The lock is ``flock`` on ``folder/.lock``, which holds who has it (pid, host, start, command); the
kernel drops it when the holder exits, however it ends, so a killed run never leaves a folder
locked. A second process gets ``FolderInUse``, one line naming the holder, before it changes
anything.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lightning_rect.errors import LightningRectError

LOCK_FILE = ".lock"
#: The lock files this process holds now (``release_held_locks`` removes them before an immediate exit).
_HELD: set[Path] = set()


class FolderInUse(LightningRectError):
    """Another process holds the folder's lock."""


@contextmanager
def run_lock(folder: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (the folder is made if needed); ``FolderInUse`` if another
    process has it."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 2000).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderInUse(
                f"the {what} {folder} is in use by {holder}; nothing was changed; wait until it ends "
                "(or stop it), then run this again"
            ) from None
        except OSError as err:  # a file system without locks: go on unguarded, and say so
            print(f"note: {folder} cannot be locked ({err.strerror}); run one process at a time in it", file=sys.stderr)
            break
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # still the lock file: not one a holder removed while we opened it
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        command = " ".join(sys.argv)[:300]
        os.ftruncate(fd, 0)
        os.write(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"({command})\n".encode(),
        )
        _HELD.add(path)
        yield Path(folder)
    finally:
        _HELD.discard(path)
        with suppress(OSError):
            path.unlink()  # before the lock goes: the next holder makes a new file
        os.close(fd)


def release_held_locks() -> None:
    """Remove the lock files this process holds, for a process about to end at once (``os._exit``): the
    kernel drops the locks themselves, this leaves no file naming a holder that is gone."""
    for path in list(_HELD):
        with suppress(OSError):
            path.unlink()
        _HELD.discard(path)


def held_by(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder``'s lock now (its line), or None when nobody does; takes nothing."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 2000).decode(errors="replace").strip() or "another process"
    except OSError:
        return None
    finally:
        os.close(fd)
    return None
