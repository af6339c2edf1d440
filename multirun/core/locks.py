"""File locks: the one place multirun takes, tests and gives up an exclusive ``flock``.

Every lock of ours is an exclusive ``flock`` on a file: the supervisor's pidfile, an
account's host-wide lock, a journal's, a session token's renewal lock. The kernel drops
it when the process dies, however it dies. A lock guards only while its path still names
the file we locked: someone deleting or replacing the file lets a second process lock
the new one beside us, so :meth:`HeldLock.lost` says when that happened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

_BUSY = (errno.EWOULDBLOCK, errno.EACCES)


class HeldLock:
    """An exclusive ``flock`` we hold on ``path`` until :meth:`release` (or death)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, path: Path, *, mode: int = 0o600) -> HeldLock | None:
        """Lock ``path`` (created ``mode`` if missing) without waiting; None when another
        process holds it. A file unlinked between our open and our lock is not a lock: we
        lock the file the path names now."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in _BUSY:
                    return None
                raise
            if names_file(path, fd):
                return cls(path, fd)
            os.close(fd)

    @classmethod
    @contextlib.contextmanager
    def waiting(cls, path: Path, *, mode: int = 0o600) -> Iterator[HeldLock]:
        """Hold the lock on ``path`` for a ``with`` block, waiting for it if need be."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        lock = cls(path, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield lock
        finally:
            lock.release()

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"the lock on {self.path} was released")
        return self._fd

    def lost(self) -> str | None:
        """Why the lock no longer guards its path (released, deleted or replaced), or None."""
        if self._fd is None:
            return f"the lock {self.path} was released"
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return f"the lock {self.path} was deleted while held"
        held = os.fstat(self._fd)
        if (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
            return f"the lock {self.path} was replaced while held"
        return None

    def write(self, text: str) -> None:
        """Replace the lock file's content (who holds it), in place: the inode stays."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def read(self, limit: int = 4096) -> bytes:
        return os.pread(self.fd, limit, 0)

    def release(self) -> None:
        """Give the lock up (closing the descriptor drops the ``flock``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def names_file(path: Path, fd: int) -> bool:
    """Whether ``path`` is (still) the file open on ``fd``."""
    try:
        on_disk = path.stat()
    except OSError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def is_held(path: Path) -> bool:
    """Whether some process holds an exclusive lock on ``path`` (probed, not taken)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock we just took
    return False


def read_holder(path: Path, limit: int = 4096) -> bytes:
    """What a lock file says of its holder, without taking the lock (b"" if unreadable)."""
    try:
        with open(path, "rb") as file:
            return file.read(limit)
    except OSError:
        return b""
