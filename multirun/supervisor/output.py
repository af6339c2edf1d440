"""The supervisor's log output: one merged stream on the terminal, one file per account.

- Every line goes through a :class:`~multirun.core.redact.Redactor` first (defence in depth:
  workers never log secrets; this catches a strategy that prints one anyway).
- :class:`Printer` writes ``hh:mm:ss name | line`` with the name in its own colour (honcho
  style; no colour when the stream is not a TTY or ``NO_COLOR`` is set), or one JSON object
  per line with ``--log-format json``, through a :class:`TerminalWriter`.
- :class:`TerminalWriter` writes from a thread of its own, so a terminal that stops
  reading (a paused pager, Ctrl-S) never holds up the supervisor.
- :class:`RotatingFile` is ``state_dir/<name>/worker.log`` (and ``state_dir/supervisor.log``
  for the supervisor's events and the simulator's lines): 0600, rotated by size.
- :class:`LogRouter` sends each line through the redactor to the printer and the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, TextIO

from multirun.core.clock import hms, log_stamp
from multirun.core.redact import Redactor
from multirun.core.statedir import StateDir

# A worker's traceback lines start with this (multirun.account.process.TRACE_MARK, kept
# equal by a test): they go to its worker.log only, its one-line error to both.
TRACE_MARK = "trace| "

LogFormat = Literal["text", "json"]
SUPERVISOR = "supervisor"
ROTATE_BYTES = 5 * 1024 * 1024
ROTATE_KEEP = 3

# ANSI colours, in the order honcho hands them out (bright variants after the plain ones).
COLOURS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)
RESET = "\033[0m"


def colour_wanted(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class TerminalWriter:
    """Writes text to a file descriptor from a daemon thread; :meth:`put` never blocks.

    The supervisor must go on supervising when its output does not drain (a pager
    left paused, Ctrl-S, a full pipe): past ``max_pending`` waiting lines, lines are
    left out of the terminal (the log files have every one) and a note says how many.
    The thread writes with ``os.write``, not through ``sys.stdout``, so a fork while it
    is blocked leaves no I/O lock held that a child could need.
    """

    def __init__(self, fd: int, max_pending: int = 10_000) -> None:
        self.fd = fd
        self.pending: queue.Queue[str | None] = queue.Queue(max_pending)
        self.left_out = 0
        self.broken = False
        self.thread = threading.Thread(target=self._drain, name="terminal", daemon=True)
        self.thread.start()

    @classmethod
    def for_stream(cls, stream: TextIO) -> TerminalWriter | None:
        """A writer for ``stream``'s descriptor; None for in-memory streams."""
        try:
            fd = stream.fileno()
            stream.flush()  # what was written through ``stream`` goes first
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        return cls(fd)

    def put(self, text: str) -> None:
        if self.broken:
            return
        if self.left_out and self._offer(_left_out_note(self.left_out)):
            self.left_out = 0
        if not self.left_out and self._offer(text):
            return
        self.left_out += 1

    def close(self, timeout: float = 2.0) -> None:
        """Write what is waiting (for up to ``timeout`` s) and stop the thread."""
        with contextlib.suppress(queue.Full):
            self.pending.put(None, timeout=timeout)
        self.thread.join(timeout)

    def _offer(self, text: str) -> bool:
        try:
            self.pending.put_nowait(text)
        except queue.Full:
            return False
        return True

    def _drain(self) -> None:
        while (text := self.pending.get()) is not None:
            data = text.encode("utf-8", errors="replace")
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:
                self.broken = True  # terminal gone (SIGHUP, closed pipe): keep supervising
                return


def _left_out_note(count: int) -> str:
    return f"[{count} line(s) not shown here: the terminal was not reading; see the log files]\n"


class Printer:
    """The merged terminal stream: ``hh:mm:ss name | line`` (coloured) or JSON lines."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        stream: TextIO | None = None,
        log_format: LogFormat = "text",
        colour: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.format = log_format
        self.colour = colour_wanted(self.stream) if colour is None else colour
        ordered = [SUPERVISOR, *names]
        self.width = max(len(n) for n in ordered)
        self.colours = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
        self.writer = TerminalWriter.for_stream(self.stream)
        self._broken = False

    @property
    def broken(self) -> bool:
        """The terminal is gone: lines go to the log files only."""
        return self._broken or (self.writer is not None and self.writer.broken)

    def prefix(self, name: str, ts: float) -> str:
        """``hh:mm:ss name | `` (UTC, as status shows times), coloured per account."""
        head = f"{hms(ts)} {name.ljust(self.width)} |"
        if not self.colour:
            return f"{head} "
        code = self.colours.get(name)
        style = f"\033[{code}m" if code else "\033[1m"  # supervisor: bold
        return f"{style}{head}{RESET} "

    def format_line(self, name: str, line: str, stream: str, ts: float) -> str:
        if self.format == "json":
            record = {"ts": log_stamp(ts), "account": name, "stream": stream, "line": line}
            return json.dumps(record, ensure_ascii=False)
        return self.prefix(name, ts) + line

    def write(self, name: str, line: str, stream: str = "stderr", ts: float | None = None) -> None:
        if self.broken:
            return
        text = self.format_line(name, line, stream, time.time() if ts is None else ts) + "\n"
        if self.writer is not None:
            self.writer.put(text)
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True  # terminal gone (SIGHUP, closed pipe): keep supervising

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RotatingFile:
    """An append-only log file (0600) rotated by size: ``worker.log``, ``.1`` ... ``.N``."""

    def __init__(self, path: Path, max_bytes: int = ROTATE_BYTES, keep: int = ROTATE_KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.fd = -1
        self.size = 0

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o600)
        os.fchmod(self.fd, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, text: str) -> None:
        data = text.encode("utf-8", errors="replace")
        try:
            if self.fd < 0:
                self._open()
            if self.size and self.size + len(data) > self.max_bytes:
                self.rotate()
            os.write(self.fd, data)
            self.size += len(data)
        except OSError:
            self.close()  # disk full or directory gone: try again on the next line

    def rotate(self) -> None:
        self.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def fds(self) -> Iterator[int]:
        if self.fd >= 0:
            yield self.fd


class LogRouter:
    """Every line goes through the redactor, then to the terminal and the account's file."""

    def __init__(
        self,
        printer: Printer,
        redactor: Redactor,
        files: dict[str, RotatingFile] | None = None,
    ) -> None:
        self.printer = printer
        self.redact = redactor
        self.files = files or {}

    @classmethod
    def for_accounts(
        cls,
        names: Iterable[str],
        state_dir: Path,
        secrets: Iterable[str],
        *,
        log_format: LogFormat = "text",
        stream: TextIO | None = None,
        max_bytes: int = ROTATE_BYTES,
        keep: int = ROTATE_KEEP,
    ) -> LogRouter:
        names, layout = list(names), StateDir(state_dir)
        files = {n: RotatingFile(layout.account(n).log, max_bytes, keep) for n in names}
        files[SUPERVISOR] = RotatingFile(layout.supervisor_log, max_bytes, keep)
        printer = Printer(names, stream=stream, log_format=log_format)
        return cls(printer, Redactor(secrets), files)

    def add_account(self, name: str) -> None:
        """An account started after the supervisor (a command, a reload): its log file."""
        own = self.files.get(SUPERVISOR)
        if own is not None and name not in self.files:
            log = StateDir(own.path.parent).account(name).log
            self.files[name] = RotatingFile(log, own.max_bytes, own.keep)
        printer = self.printer
        printer.colours.setdefault(name, COLOURS[len(printer.colours) % len(COLOURS)])
        printer.width = max(printer.width, len(name))

    def line(self, name: str, line: str, stream: str = "stderr") -> None:
        """A line a child process wrote."""
        ts = time.time()
        clean = self.redact(line)
        if not clean.startswith(TRACE_MARK):  # a worker's traceback: its file only
            self.printer.write(name, clean, stream, ts)
        log_file = self.files.get(name)
        if log_file is not None:
            log_file.write(f"{log_stamp(ts)} {stream} {clean}\n")
        elif (own := self.files.get(SUPERVISOR)) is not None:  # e.g. the simulator child
            own.write(f"{log_stamp(ts)} {name} {stream} {clean}\n")

    def event(self, message: str, account: str | None = None) -> None:
        """The supervisor's own event; also written to ``account``'s file when given."""
        ts = time.time()
        clean = self.redact(message)
        self.printer.write(SUPERVISOR, clean, "supervisor", ts)
        for name in {SUPERVISOR, account or SUPERVISOR}:
            log_file = self.files.get(name)
            if log_file is not None:
                log_file.write(f"{log_stamp(ts)} supervisor {clean}\n")

    def fds(self) -> list[int]:
        return [fd for f in self.files.values() for fd in f.fds()]

    def close(self) -> None:
        self.printer.close()
        for log_file in self.files.values():
            log_file.close()
