"""The arbiter's selector: its children's pipes read into masked lines, and its wake-up pipe.

Each child has a stdout and a stderr pipe (cut into lines by a
:class:`~multirun.core.redact.LineSplitter`, then sent to the
:class:`~multirun.supervisor.output.LogRouter`) and, with a ready handshake, a pipe that
carries one line (a service's), or a line per change of an account's condition. A signal
handler writes a byte to the wake-up pipe so that :meth:`Pipes.select` returns at once.
"""

from __future__ import annotations

import contextlib
import os
import selectors
from collections.abc import Callable

from multirun.core import procutil
from multirun.core.redact import LineSplitter
from multirun.supervisor.fork import CHILD_ERROR, Forked
from multirun.supervisor.output import LogRouter
from multirun.supervisor.program import Proc


class Pipes:
    """Every descriptor the arbiter waits on, and what it reads from them."""

    def __init__(self, router: LogRouter) -> None:
        self.router = router
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = procutil.pipe(nonblocking=True)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        # other descriptors (the control socket): each callback says whether what it read
        # needs a turn of the arbiter's loop (False: it answered and changed nothing)
        self.readers: dict[int, Callable[[], bool]] = {}
        self.stirred = False  # the last select woke for a signal or another reader

    def add_reader(self, fd: int, callback: Callable[[], bool]) -> None:
        """Call ``callback`` from :meth:`select` whenever ``fd`` is readable."""
        self.readers[fd] = callback
        self.selector.register(fd, selectors.EVENT_READ, None)

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` (the caller closes it)."""
        if self.readers.pop(fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)

    def wake(self) -> None:
        """Make :meth:`select` return (safe in a signal handler)."""
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"\0")

    def watch(self, proc: Proc, forked: Forked) -> None:
        """Read the pipes of ``proc``'s new process from now on."""
        redactor = self.router.redact  # one for every pipe: its secrets are every account's
        proc.pipes = {
            forked.stdout: ("stdout", LineSplitter(redactor=redactor)),
            forked.stderr: ("stderr", LineSplitter(redactor=redactor)),
        }
        proc.ready_fd, proc.ready_data = forked.ready, b""
        proc.close_commands()
        proc.command_fd = forked.commands
        for fd in [*proc.pipes, *([forked.ready] if forked.ready is not None else [])]:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, proc)

    def select(self, timeout: float) -> list[tuple[Proc, int]]:
        """Wait up to ``timeout`` s; the children's descriptors that became readable.
        :attr:`stirred` says whether a signal or another reader (the control socket) woke it
        too: what the arbiter must answer with a turn of its loop."""
        readable = []
        self.stirred = False
        for key, _ in self.selector.select(timeout):
            if key.fd == self.wake_r:
                _drain(self.wake_r)
                self.stirred = True
            elif key.fd in self.readers:
                self.stirred |= self.readers[key.fd]()
            elif key.data is not None:  # None: a reader removed during this turn
                readable.append((key.data, key.fd))
        return readable

    def read(self, proc: Proc, fd: int) -> None:
        """Route what ``proc`` wrote on ``fd`` (stdout or stderr), line by line."""
        if fd not in proc.pipes:
            return
        stream, splitter = proc.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            for line in splitter.feed(data):
                self.line(proc, line, stream)
            return
        for line in splitter.flush():
            self.line(proc, line, stream)
        proc.pipes.pop(fd, None)
        self.close(fd)

    def read_ready(self, proc: Proc) -> str | None:
        """Read ``proc``'s handshake pipe: its line once complete ("" if it closed without
        one, and then the pipe is closed), or None while it is still to come."""
        assert proc.ready_fd is not None
        try:
            data = os.read(proc.ready_fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        proc.ready_data += data
        if data and b"\n" not in proc.ready_data:
            return None
        self.close_ready(proc)
        return proc.ready_data.split(b"\n")[0].decode(errors="replace").strip()

    def read_lines(self, proc: Proc) -> list[str]:
        """Read ``proc``'s handshake pipe when it stays open (an account: "up", then each
        change of its condition): the complete lines come so far; at EOF the pipe is closed."""
        assert proc.ready_fd is not None
        lines, proc.ready_data, eof = procutil.read_lines(proc.ready_fd, proc.ready_data)
        if eof:
            self.close_ready(proc)
        return [line.strip() for line in lines]

    def close_ready(self, proc: Proc) -> None:
        if proc.ready_fd is not None:
            self.close(proc.ready_fd)
            proc.ready_fd = None

    def drain(self, proc: Proc) -> None:
        """After an exit: route what is left in ``proc``'s output pipes, then close them."""
        for fd in list(proc.pipes):
            while fd in proc.pipes:
                self.read(proc, fd)
                if fd in proc.pipes and not _readable(fd):
                    # A grandchild may hold the pipe open: flush and stop reading.
                    stream, splitter = proc.pipes.pop(fd)
                    for line in splitter.flush():
                        self.line(proc, line, stream)
                    self.close(fd)

    def line(self, proc: Proc, line: str, stream: str) -> None:
        """Route one line of ``proc``'s output; remember the error it exits with, for
        ``multirun status`` while it restarts (its next run rewrites its own status)."""
        if line.startswith(CHILD_ERROR):
            proc.last_error = self.router.redact(line.removeprefix(CHILD_ERROR))
        self.router.line(proc.name, line, stream)

    def close(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def fds(self) -> list[int]:
        """The descriptors of its own (a forked child closes them)."""
        fds = [self.wake_r, self.wake_w, *self.readers]
        fileno = getattr(self.selector, "fileno", None)
        if fileno is not None:
            with contextlib.suppress(Exception):
                fds.append(fileno())
        return fds

    def shut(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.selector.close()


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


def _readable(fd: int) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(0))
