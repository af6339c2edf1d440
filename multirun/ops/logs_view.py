"""``multirun logs``: the per-account log files as one merged stream, optionally followed.

Reads ``state_dir/<name>/worker.log`` (and ``state_dir/supervisor.log`` when no account is
named) as the supervisor wrote them (``<ISO time> <stream> <line>``), orders the lines by
their time, and prints them as the supervisor's terminal does (``hh:mm:ss name | line``,
coloured per account; :class:`multirun.supervisor.output.Printer`), or one JSON object per line.
``follow`` then polls the files like ``docker compose logs -f``: new lines as they come,
a rotated file (replaced by a new one) read to its end and then the new one from its
start, accounts whose log appears later picked up. It needs no running supervisor, reads
no config (:mod:`multirun.ops.locate` finds the state directory) and imports no strategy.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from multirun.core.errors import UsageError
from multirun.core.statedir import WORKER_LOG, StateDir
from multirun.core.statefiles import read_supervisor
from multirun.ops import locate
from multirun.supervisor.output import COLOURS, SUPERVISOR, LogFormat, Printer, colour_wanted

POLL_S = 0.2
_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z (\S+) ?(.*)$")


@dataclass(frozen=True)
class Entry:
    """One log line: when, whose, which stream, what."""

    ts: float
    name: str
    stream: str
    line: str
    seq: int = 0  # order within its file, for equal times


def parse(text: str, source: str, last_ts: float = 0.0, seq: int = 0) -> Entry:
    """One line of ``source``'s file (an account, or ``supervisor`` for supervisor.log)."""
    match = _LINE.match(text)
    if match is None:  # not written by the router (e.g. cut by a crash): keep it, in place
        return Entry(last_ts, source, "stderr", text, seq)
    stamp, millis, word, rest = match.groups()
    ts = _utc_seconds(stamp) + int(millis) / 1000
    if word == SUPERVISOR:  # the supervisor's event (in supervisor.log, or about an account)
        return Entry(ts, SUPERVISOR, SUPERVISOR, rest, seq)
    if source == SUPERVISOR:  # a service's line: "<name> <stream> <line>"
        stream, _, line = rest.partition(" ")
        return Entry(ts, word, stream, line, seq)
    return Entry(ts, source, word, rest, seq)


def _utc_seconds(stamp: str) -> float:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) as epoch seconds; fromisoformat, not strptime: a
    tenth of the cost, and ``logs`` and the dashboard parse every line they show."""
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


@dataclass
class Source:
    """One log file being read: where it is, how far it has been read."""

    name: str
    path: Path
    fd: int = -1
    inode: int | None = None
    offset: int = 0
    partial: bytes = b""
    last_ts: float = 0.0
    seq: int = 0
    skip_events: bool = False  # supervisor lines of an account file (shown from supervisor.log)

    def entries(self, data: bytes) -> list[Entry]:
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        out = []
        for raw in complete:
            entry = parse(raw.decode("utf-8", errors="replace"), self.name, self.last_ts, self.seq)
            self.seq += 1
            self.last_ts = entry.ts
            if not (self.skip_events and entry.stream == SUPERVISOR):
                out.append(entry)
        return out

    def read_new(self) -> list[Entry]:
        """Lines added since the last read; follows a rotation (the file replaced)."""
        out: list[Entry] = []
        if self.fd < 0 and not self._open():
            return out
        out += self.entries(self._drain())
        with contextlib.suppress(OSError):
            current = os.stat(self.path)
            if current.st_ino != self.inode:  # rotated: the old file is read to its end above
                self.close()
                if self._open():
                    out += self.entries(self._drain())
            elif current.st_size < self.offset:  # truncated in place
                os.lseek(self.fd, 0, os.SEEK_SET)
                self.offset = 0
        return out

    def _open(self) -> bool:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        self.inode, self.offset, self.partial = os.fstat(self.fd).st_ino, 0, b""
        return True

    def _drain(self) -> bytes:
        chunks = []
        while chunk := os.read(self.fd, 1 << 16):
            chunks.append(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class LogView:
    """The files of a state directory being shown, and how they are printed."""

    state_dir: Path
    names: list[str]  # the accounts shown, in colour order
    include_supervisor: bool
    printer: Printer
    out: TextIO
    sources: dict[str, Source] = field(default_factory=dict)

    def refresh_sources(self, fixed: bool) -> None:
        """Open a source per log; unless ``fixed`` (names given), pick up new accounts."""
        layout = StateDir(self.state_dir)
        if not fixed:
            for name in _log_dirs(self.state_dir):
                if name not in self.names:
                    self.names.append(name)
                    self.printer.colours.setdefault(name, _colour(len(self.printer.colours)))
                    self.printer.width = max(self.printer.width, len(name))
        for name in self.names:
            if name not in self.sources:
                skip = self.include_supervisor
                self.sources[name] = Source(name, layout.account(name).log, skip_events=skip)
        if self.include_supervisor and SUPERVISOR not in self.sources:
            self.sources[SUPERVISOR] = Source(SUPERVISOR, layout.supervisor_log)

    def backlog(self, tail: int | None) -> list[Entry]:
        """What the files hold now (and the previous rotation when short of ``tail``)."""
        entries: list[Entry] = []
        for source in self.sources.values():
            new = source.read_new()
            if tail is None or len(new) < tail:
                older = Source(source.name, source.path.with_name(source.path.name + ".1"))
                older.skip_events = source.skip_events
                old = older.read_new()
                older.close()
                new = old + new
            entries += new if tail is None else new[-tail:]
        entries.sort(key=lambda e: (e.ts, e.name, e.seq))
        return entries if tail is None else entries[-tail:] if tail else []

    def show(self, entries: Sequence[Entry]) -> None:
        for entry in sorted(entries, key=lambda e: (e.ts, e.name, e.seq)):
            self.out.write(self.printer.format_line(entry.name, entry.line, entry.stream, entry.ts))
            self.out.write("\n")
        self.out.flush()

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def run(
    config: Path | None,
    names: Sequence[str] = (),
    *,
    state_dir: Path | None = None,
    follow: bool = False,
    tail: int | None = None,
    log_format: LogFormat = "text",
    stream: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """``multirun logs``: print (and with ``follow``, keep printing) the merged logs."""
    out = sys.stdout if stream is None else stream
    where = locate.target(config, state_dir)
    known = _known_names(where)
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join(known) or "none yet"
        raise UsageError(f"no account named {', '.join(unknown)} (accounts: {listed})")
    shown = list(names) or known
    colour = colour_wanted(out) and log_format == "text"
    printer = Printer(shown, stream=io.StringIO(), log_format=log_format, colour=colour)
    view = LogView(where.state_dir, shown, not names, printer, out)
    stop = stop or threading.Event()
    try:
        view.refresh_sources(fixed=bool(names))
        view.show(view.backlog(tail))
        while follow and not stop.wait(POLL_S):
            view.refresh_sources(fixed=bool(names))
            view.show([e for s in list(view.sources.values()) for e in s.read_new()])
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `multirun logs | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    finally:
        view.close()
    return 0


def _known_names(where: locate.Target) -> list[str]:
    """Account names, in the supervisor's colour order: the running (or last) supervisor's,
    then the config file's, then any other account directory holding a log."""
    data = where.running.data if where.running else read_supervisor(StateDir(where.state_dir))
    accounts = data.get("accounts")
    names = list(accounts) if isinstance(accounts, dict) else []
    if where.file is not None and where.file.accounts is not None:
        names += [n for n, _ in where.file.accounts if n not in names]
    names += [n for n in _log_dirs(where.state_dir) if n not in names]
    return names


def _log_dirs(state_dir: Path) -> list[str]:
    if not state_dir.is_dir():
        return []
    return sorted(p.name for p in state_dir.iterdir() if (p / WORKER_LOG).exists())


def _colour(index: int) -> int:
    return COLOURS[index % len(COLOURS)]
