"""Small, Linux-first process helpers: parent-death signal, process names, pidfiles, JSON files.

Everything degrades gracefully off Linux: :func:`pipe` falls back to ``os.pipe`` and
fcntl where ``os.pipe2`` is missing, :func:`set_parent_death_signal` returns False (the
children then rely on watching a pipe only the arbiter holds), and the /proc readers
answer from ``kill(pid, 0)`` alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from multirun.core.locks import HeldLock, is_held

PR_SET_PDEATHSIG = 1
PROC = Path("/proc")
# `status` and `stop` probe the pidfile's lock for an instant; a start meeting such a probe
# tries again for this long before it believes another supervisor holds the lock.
LOCK_RETRY_S = 0.2


def pipe(*, nonblocking: bool = False) -> tuple[int, int]:
    """A close-on-exec pipe (non-blocking on request): ``os.pipe2`` where it exists (Linux),
    else ``os.pipe`` and fcntl (macOS)."""
    pipe2 = getattr(os, "pipe2", None)
    if pipe2 is not None:
        return pipe2(os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
    r, w = os.pipe()
    for fd in (r, w):
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
        if nonblocking:
            os.set_blocking(fd, False)
    return r, w


def read_lines(fd: int, pending: bytes) -> tuple[list[str], bytes, bool]:
    """What a non-blocking pipe holds now, after ``pending`` (the part of a line read
    before): (its complete lines, decoded; the part of a line left; whether it is at EOF,
    a read error counting as EOF). Nothing to read is ([], pending, False)."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return [], pending, False
    except OSError:
        chunk = b""
    *lines, rest = (pending + chunk).split(b"\n")
    return [line.decode(errors="replace") for line in lines], rest, not chunk


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols (libc's among them), not ctypes.util.find_library: that
        # runs `ldconfig -p` in a subprocess, in every forked worker (~6 ms and ~1 MiB of
        # pages copied from the supervisor each, 500 ldconfig runs for a start of 500).
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_process_name(name: str) -> None:
    """Name this process as ``ps -e`` and ``top`` show it (Linux: ``comm``, 15 bytes);
    its command line, which ``ps -f`` shows, stays the one it was started with."""
    with contextlib.suppress(OSError):  # os calls: pathlib's code would be run in each child
        fd = os.open("/proc/self/comm", os.O_WRONLY)
        try:
            os.write(fd, name.encode()[:15])
        finally:
            os.close(fd)


def alive(pid: int) -> bool:
    """True when ``pid`` exists (zombies included) and we may signal it or it is someone else's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet reaped by its parent counts)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return not alive(pid)
    return text[text.rindex(")") + 2] in "ZX"


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` from /proc, or None when unknown (gone, or not Linux)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def looks_like_multirun(pid: int) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) a multirun process."""
    if not alive(pid):
        return False
    argv = cmdline(pid)
    if argv is None:
        return not PROC.is_dir()  # no /proc: trust the pidfile lock alone
    return any("multirun" in part for part in argv)


# --- pidfile with a lock ---------------------------------------------------------------


class PidFile:
    """``state_dir/supervisor.pid``, held with an exclusive lock while we run.

    A pidfile nobody holds the lock of is stale and is taken over. The file is unlinked
    only by the one holding its lock (:meth:`release`, :func:`remove_stale_pidfile`), and
    a lock is ours only if the path still names the file we locked (see
    :class:`~multirun.core.locks.HeldLock`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock: HeldLock | None = None

    def acquire(self) -> int | None:
        """Lock and write our pid; returns None, or the pid of the holder when locked."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        deadline = time.monotonic() + LOCK_RETRY_S
        while (lock := HeldLock.try_acquire(self.path)) is None:
            if time.monotonic() >= deadline:
                return read_pid(self.path) or -1
            time.sleep(0.01)
        lock.write(f"{os.getpid()}\n")
        self.lock = lock
        return None

    def release(self) -> None:
        if self.lock is None:
            return
        with contextlib.suppress(OSError):
            if read_pid(self.path) == os.getpid():
                self.path.unlink()
        self.lock.release()
        self.lock = None


def remove_stale_pidfile(path: Path) -> bool:
    """Unlink ``path`` if nobody holds its lock (under our own lock, so a start that
    locks it meanwhile is not left holding an unlinked file); whether it was removed."""
    if not path.exists():
        return False
    try:
        lock = HeldLock.try_acquire(path)
    except OSError:
        return False
    if lock is None:
        return False
    try:
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        lock.release()


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_locked(path: Path) -> bool:
    """Whether some process holds the pidfile's lock (a supervisor is running)."""
    return is_held(path)


# --- JSON files --------------------------------------------------------------------------


class FileSignature(NamedTuple):
    """What tells that a file's content changed without reading it: another inode
    (replaced), size or modification time (written in place; not the change time, which
    a reader's open can move). Two writes within the file system's time resolution can
    leave it equal: a reader that must see every write reads again while ``mtime_ns`` is
    recent."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSignature:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def signature(path: Path | str) -> FileSignature | None:
    """``path``'s :class:`FileSignature`; None when it cannot be stat'ed (missing)."""
    try:
        return FileSignature.of(os.stat(path))
    except OSError:
        return None


def write_json_atomic(path: Path, data: Any, *, compact: bool = False) -> None:
    """Write ``path`` (0600) so readers see the old or the new file, never a torn one.

    ``compact``: one line, encoded by json's C encoder (an indented file goes through its
    pure-Python one, about ten times slower: it matters for a file of 500 accounts)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(data, indent=None if compact else 1, sort_keys=True) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a directory in the way: leave no .tmp behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# How long a reader may take between opening a rewritten file and reading it whole: its
# content's inode is written again only this long after the file stopped naming it.
REUSE_AFTER_S = 1.0
# What os.link raises on a file system without hard links (some network or FUSE mounts):
# RewrittenJson then writes a new file each time, as write_json_atomic does.
NO_HARD_LINKS = {
    errno.EPERM,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EXDEV,
    errno.EMLINK,
    errno.ENOSYS,
}


class RewrittenJson:
    """A JSON file one process rewrites often (an account's ``status.json``, after every
    tick), so that readers see the old or the new file, never a torn one, as
    :func:`write_json_atomic` does, without creating and freeing an inode each time.

    The content goes into one of two hidden files beside it (``.<name>.a``, ``.<name>.b``,
    0600), never the one ``path`` names now, overwritten in place; a hard link to it then
    replaces ``path`` by a rename. Both inodes live on (each keeps its hidden name), so a
    write allocates and frees nothing: on ext4 after an idle second, 0.10-0.13 ms instead
    of 0.31-0.34 (issue 27: a tenth of a deployed tick's CPU went to creating a file and
    renaming it over the last). A reader holds the inode it opened; that inode is written
    again only :data:`REUSE_AFTER_S` after ``path`` stopped naming it (sooner than that,
    a new file is written as :func:`write_json_atomic` does; so is every write on a file
    system that refuses hard links). Raises OSError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.slots = (path.with_name(f".{path.name}.a"), path.with_name(f".{path.name}.b"))
        self._named: int | None = None  # the slot ``path`` names (None: neither, or unknown)
        self._left = [float("-inf"), float("-inf")]  # monotonic: when path stopped naming it
        self._known = False  # whether _named was found on disk (once, at the first write)
        self.links = True  # False where the file system refuses hard links

    def write(self, data: Any) -> None:
        if not self._known:
            self._named, self._known = self._naming(), True
        now = time.monotonic()
        free = [i for i in (0, 1) if i != self._named and now - self._left[i] >= REUSE_AFTER_S]
        if not free or not self.links:
            write_json_atomic(self.path, data, compact=True)
            self._moved(None, now)
            return
        slot = free[0]
        _overwrite(self.slots[slot], (json.dumps(data, sort_keys=True) + "\n").encode())
        new = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        try:
            _link_over(self.slots[slot], new)
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            self.links = False  # a file system without hard links: a new file each time
            self.write(data)
            return
        try:
            os.replace(new, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(new)
            raise
        self._moved(slot, now)

    def _moved(self, slot: int | None, now: float) -> None:
        if self._named is not None and self._named != slot:
            self._left[self._named] = now
        self._named = slot

    def _naming(self) -> int | None:
        """The slot ``path`` names on disk (a previous run's worker left it), or None."""
        try:
            named = os.stat(self.path).st_ino
        except OSError:
            return None
        for index, slot in enumerate(self.slots):
            with contextlib.suppress(OSError):
                if os.stat(slot).st_ino == named:
                    return index
        return None


def _link_over(source: Path, link: Path) -> None:
    """A hard link ``link`` to ``source``; one left there (by a process of this pid killed
    between its link and its rename) is removed first. Only then: an unlink that finds
    nothing, before every write, was a quarter of the write's system time (~50 us)."""
    try:
        os.link(source, link)
    except FileExistsError:
        os.unlink(link)
        os.link(source, link)


def _overwrite(path: Path, data: bytes) -> None:
    """``path``'s content replaced by ``data`` in place (0600 when created)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, flags, 0o600)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


READ_CHUNK = 64 * 1024  # a status.json is about 1 KB; supervisor.json 250 bytes an account


def read_json(path: Path | str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when missing, unreadable, torn or not an
    object. Four system calls (open, read, the read that finds the end, close) where
    ``Path.read_text`` makes eight (two fstat, an isatty ioctl, a seek): the dashboard and
    the notifier read ten status.json files a second at 50 accounts."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, READ_CHUNK)]
        while chunks[-1]:  # to the end, whatever a read returned
            chunks.append(os.read(fd, READ_CHUNK))
        data = json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


class ChangedFiles:
    """JSON files read again only when one changed (its :class:`FileSignature`: a file
    replaced whole, as :class:`RewrittenJson` and :func:`write_json_atomic` replace
    theirs, has another inode, size or time). For readers that poll a state directory
    (the notifier every second, the dashboard every 2 s): most files have not changed
    since the last look, and parsing them all was most of what a look cost (the
    notifier's: 2.9 ms a poll at 50 accounts). A file read again is a new object; an
    unchanged one is the same object as last time (a caller may skip its work on it)."""

    def __init__(self) -> None:
        self._seen: dict[Path | str, tuple[FileSignature | None, dict[str, Any]]] = {}

    def read(self, path: Path | str) -> dict[str, Any]:
        """The object in ``path`` ({} when missing or unreadable)."""
        stamp = signature(path)
        seen = self._seen.get(path)
        if seen is not None and seen[0] == stamp:
            return seen[1]
        data = (read_json(path) or {}) if stamp is not None else {}
        self._seen[path] = (stamp, data)
        return data


def kill(pid: int | None, signum: int) -> None:
    """Send ``signum`` to ``pid`` unless it is None or already gone."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
