"""What the page shows, read from the state directory only (never from a worker).

:class:`Fleet` answers ``/api/status`` (``multirun status --json``'s document, built by
:func:`multirun.ops.status.collect_at`), the page's richer view (per account: state,
strategy, position, P&L, equity sparkline, orders today, uncertain orders; totals; the
banners that need a look), an account's last log lines and its last trades today. Every
view is cached for a moment (:data:`STATUS_TTL_S`): three open pages polling cost what one
does. A log tail and the trades are read again only when their file changed; each row
says in a word (``logs_version``, ``trades_version``) what they are now, and a page
fetches them only when that moved. The journals are read through one read-only
connection each, kept open.
Every string that leaves here passes the :class:`~multirun.core.redact.Redactor`: an
account's row is masked when its text changed since the last build (masking every row
at every build, twice, was half of what the dashboard cost), the rest when its text
changed.

A build does for an account only what changed since the last one (at 50 accounts every
5 s, a build 2 s after the last finds ~30 rows unchanged): its merged row is kept while
its supervisor entry, its status file (the very objects: both are parsed again only when
they changed) and its place in the fleet are; its row of the page while that and its
log's and journal's files and today's figures are. Time alone moves the uptime: a row
kept is given again with it now (the server's encoding of the row kept too, the uptime
put in its bytes).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import is_not, ne
from pathlib import Path
from typing import Any, cast

from multirun.account.journal import reader
from multirun.core.clock import iso_ms
from multirun.core.errors import JournalError, SupervisorError
from multirun.core.procutil import ChangedFiles, FileSignature, signature
from multirun.core.redact import Redactor
from multirun.core.statedir import JOURNAL, AccountDir, StateDir
from multirun.core.statefiles import (
    ProcessEntry,
    SupervisorFile,
    WorkerStatus,
)
from multirun.core.states import State
from multirun.ops import control_client, locate, logs_view
from multirun.ops import status as fleet_status

STATUS_TTL_S = 2.0  # pages poll every 2 s: one read of the state files serves them all
# An order is journaled (committed) as it is created: a read that starts this long before
# the last one's time cannot miss one committed late.
TALLY_OVERLAP_S = 60.0
EQUITY_TTL_S = 15.0  # the worker samples its equity every 15 s: no use reading it sooner
LOG_LINES = 200
TRADE_ROWS = 200  # an account's last orders of today shown (and every one held)
LOG_TAIL_BYTES = 256 * 1024  # enough for 200 lines of any sane length
SPARK_POINTS = 60
DISK_LOW_BYTES = 200 * 1024 * 1024  # the journals and logs need room: warn below this
DAY_S = 86400
STOPPED_STATES = (State.STOPPED, State.FATAL)
RACY_S = 2.0  # a directory changed this recently may change again within its mtime's tick


@dataclass(frozen=True)
class AccountFacts:
    """What runner.yaml says of an account that its state files do not."""

    strategy: str
    instrument: str
    on_stop: str

    def masked(self, redact: Redactor) -> AccountFacts:
        return AccountFacts(redact(self.strategy), redact(self.instrument), redact(self.on_stop))


@dataclass
class _Cached:
    at: float
    value: Any
    stamp: object = None  # what the value was read from (a journal's files), if known


class Fleet:
    """The state directory, read for the page (thread-safe: the server is threaded)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        file_view: Callable[[], locate.FileView | None],
        accounts: Mapping[str, AccountFacts],
        redactor: Redactor,
        clock: Callable[[], float] = time.time,
        disk_free: Callable[[Path], int] | None = None,
        ask: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None,
        running: Callable[[Path], locate.Running | None] | None = None,
    ) -> None:
        self.layout = StateDir(state_dir)
        self.file_view = file_view
        self.redact = redactor
        self.accounts = {name: facts.masked(redactor) for name, facts in accounts.items()}
        self.clock = clock
        self.disk_free = disk_free or _disk_free
        # a request to the supervisor on its control socket, and its reply: by default on
        # one connection kept between builds (a new one every 2 s cost the supervisor an
        # accept, a peer check and a close besides the reply)
        self._kept = control_client.KeptConnection(self.layout.control_socket, fleet_status.ASK_S)
        self.ask = ask or (lambda _state_dir, payload: self._kept(payload))
        # the supervisor running on the state directory (its supervisor.json parsed again
        # only when it changed)
        self.running = running or functools.partial(locate.running, read_file=self._read_supervisor)
        self._lock = threading.RLock()  # view() reads status() under it
        self._cache: dict[str, _Cached] = {}
        self._journals: dict[str, tuple[str, str]] = {}  # each account's journal and its WAL
        self._tallies: dict[str, _Tally] = {}  # each account's day so far, read so far
        self._texts: dict[str, tuple[str, Any]] = {}  # a document's text, and it masked
        self._tails: dict[str, _Tail] = {}  # each account's log tail, read so far
        self._files = ChangedFiles()  # the status files and supervisor.json, read so far
        self._status_paths: dict[str, str] = {}  # each account's status file
        self._trade_rows: dict[str, dict[reader.JournalTrade, dict[str, Any]]] = {}
        self._logs: dict[str, str] = {}  # each account's log path
        self._connections = reader.Connections()  # one read-only connection a journal
        # the supervisor's status reply, asked `unless` the one kept is current
        self._replies = control_client.StatusReplies(functools.partial(self.ask, self.layout.path))
        self._dirs: tuple[object, list[str]] = (None, [])  # the state dir's stamp, its dirs
        # each account's row as merged last, and its inputs: made again only when they changed
        self._merged: dict[str, _Merged] = {}
        # each account's row of the page as made last, and its inputs (the last build's)
        self._views: dict[str, _ViewRow] = {}

    def close(self) -> None:
        """Close the journals' connections kept between reads, and the supervisor's."""
        self._connections.close()
        self._kept.close()

    # --- the documents -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``multirun status --json``'s document, as it is now (within STATUS_TTL_S)."""
        return self._cached("status", STATUS_TTL_S, self._read_status)

    def view(self) -> dict[str, Any]:
        """The page's document: the status, each account's extras, totals and banners."""
        return self._cached("view", STATUS_TTL_S, self._build_view)

    def logs(self, name: str) -> list[dict[str, Any]]:
        """Account ``name``'s last :data:`LOG_LINES` log lines, oldest first: as the file
        is now (at least as new as its row's ``logs_version``), read again only when it
        changed."""
        self._known(name)
        stamp = functools.partial(self._log_stamp, name)
        return self._cached(f"logs:{name}", 0.0, lambda: self._tail(name), stamp=stamp)

    def trades(self, name: str) -> list[dict[str, Any]]:
        """Account ``name``'s last :data:`TRADE_ROWS` journaled orders of today (UTC) and
        every one still held, newest first: as the journal is now (at least as new as its
        row's ``trades_version``), read again only when it changed."""
        self._known(name)

        def rows() -> list[dict[str, Any]]:
            found = self._journal(name)
            if found is None:
                return []
            start = self._midnight()
            today = [t for t in found if t.is_held or max(_times(t)) >= start]
            # a trade's row made again only when it changed (most did not since the
            # last read: a tick adds one or two)
            was, made = self._trade_rows.get(name, {}), {}
            for trade in today:
                made[trade] = was.get(trade) or _trade_row(trade)
            self._trade_rows[name] = made
            return [made[t] for t in reversed(today)]

        stamp = self._journal_stamp(name)
        result: list[dict[str, Any]] = self._cached(f"trades:{name}", 0.0, rows, stamp=stamp)
        return result

    # --- building --------------------------------------------------------------------

    def _read_status(self) -> dict[str, Any]:
        found = fleet_status.collect_at(
            self.layout.path,
            self.file_view(),
            read_worker=self._worker_status,
            live=self._live_view,
            account_names=self._account_names,
            row_of=self._row_of,
            running=self.running,
            now=self.clock(),
        )
        changed: list[tuple[dict[str, Any], str]] = []  # (a row shown, its field to mask)
        snapshot = found.to_dict(functools.partial(self._shown, changed=changed))
        if changed:  # the rows' fields with text new since the last build, masked at once
            fields = [{key: shown[key]} for shown, key in changed]
            for (shown, key), field in zip(changed, _masked(fields, self.redact), strict=True):
                (shown[key],) = field.values()  # its only one (whatever its name became)
        order = list(snapshot)  # the CLI's
        rows = snapshot.pop("accounts")
        rest = self._masked_again("status", snapshot)
        return {key: rows if key == "accounts" else rest[key] for key in order}

    def _live_view(self, state_dir: Path, found: locate.Running) -> SupervisorFile:
        """:func:`~multirun.ops.status.live_view`'s answer, the supervisor asked ``unless``
        the reply kept here is current (:class:`~multirun.ops.control_client.StatusReplies`:
        its 50 accounts' entries, sent and parsed every 2 s, were a tenth of a build)."""
        kept = self._replies.kept
        if kept is not None and kept.get("pid") != found.pid:
            self._replies.kept = None  # another supervisor's: ask it afresh
        try:
            reply = self._replies()
        except (SupervisorError, OSError):
            return found.data
        if not reply.get("ok") or reply.get("pid") != found.pid:
            return found.data
        return cast(SupervisorFile, reply)

    def _row_of(
        self,
        name: str,
        entry: ProcessEntry | None,
        worker: WorkerStatus,
        *,
        running: bool,
        now: float,
        supervised: bool = False,
        placed: str | None = None,
    ) -> fleet_status.AccountStatus:
        """:func:`~multirun.ops.status.merge`'s row, merged again only when its inputs are
        not the very objects of the last build (the supervisor's reply and the status
        file are kept while unchanged: most accounts, most builds); else the very row of
        the last build, its uptime (the only field that moves with time alone) now."""
        kept = self._merged.get(name)
        rest = (running, supervised, placed)
        if kept is not None and kept.entry is entry and kept.worker is worker and kept.rest == rest:
            kept.row.uptime_s = fleet_status.uptime(kept.row, now)
            return kept.row
        row = fleet_status.merge(
            name, entry, worker, running=running, now=now, supervised=supervised, placed=placed
        )
        made = self._merged[name] = _Merged(entry, worker, rest, row)
        if kept is not None:  # what was shown of the last one: only what changed is masked
            made.raw, made.shown, made.shown_of = kept.raw, kept.shown, kept.shown_of
        return row

    def _shown(
        self, row: fleet_status.AccountStatus, changed: list[tuple[dict[str, Any], str]]
    ) -> dict[str, Any]:
        """``row`` as the status document shows it (masked): the dict of the last build
        when ``row`` is the row kept then, with its uptime now; else made again, its fields
        with text new since then listed in ``changed`` (to be masked), the others as
        masked then (:func:`_row_masked`)."""
        kept = self._merged.get(row.name)
        if kept is not None and kept.shown is not None and kept.shown_of is row:
            if kept.shown["uptime_s"] is not row.uptime_s:
                kept.shown = {**kept.shown, "uptime_s": row.uptime_s}
            return kept.shown
        raw = fleet_status.row_dict(row)
        last = None
        if kept is not None and kept.raw is not None and kept.shown is not None:
            last = (kept.raw, kept.shown)
        shown = _row_masked(raw, last, changed)
        if kept is not None and kept.row is row:  # (an orphan's row is not row_of's)
            kept.raw, kept.shown, kept.shown_of = raw, shown, row
        return shown

    def _masked_again(self, slot: str, document: Any) -> Any:
        """``document`` masked, as it was last time when its text is the same (the
        Redactor's pass over a document costs as much as encoding it 20 times)."""
        text = json.dumps(document)
        kept = self._texts.get(slot)
        if kept is None or kept[0] != text:
            masked = self.redact(text)
            kept = self._texts[slot] = (text, document if masked == text else json.loads(masked))
        return kept[1]

    def _read_supervisor(self, layout: StateDir) -> SupervisorFile:
        """``supervisor.json``, parsed again only when it changed (the supervisor saves it
        on a change of state, not every 2 s)."""
        return cast(SupervisorFile, self._files.read(layout.supervisor_json))

    def _account_names(self, shown: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """``StateDir.account_names`` less ``shown``: the account directories listed again
        only when the state directory changed (one made or removed); each not shown still
        asked for its journal (the shown ones' were 50 looks a build to no use)."""
        root = self.layout.path
        stamp = signature(root)
        # listed again while its time is too recent to tell two changes apart
        racy = stamp is None or time.time() - stamp.mtime_ns / 1e9 < RACY_S
        if racy or stamp != self._dirs[0]:
            try:
                dirs = sorted(e.name for e in os.scandir(root) if e.is_dir())
            except OSError:
                dirs = []
            self._dirs = (stamp, dirs)
        others = [d for d in self._dirs[1] if d not in shown]
        return [d for d in others if os.path.exists(os.path.join(root, d, JOURNAL))]

    def _worker_status(self, account: AccountDir) -> WorkerStatus:
        """An account's status file, parsed again only when it changed: a worker writes
        it once a tick, the page asks every 2 s. Read after the look: a change between
        them is read again next time."""
        name = account.path.name
        path = self._status_paths.get(name)
        if path is None:  # made once, not joined per row per build
            path = self._status_paths[name] = str(account.status)
        return cast(WorkerStatus, self._files.read(path))

    def _build_view(self) -> dict[str, Any]:
        status = self.status()  # masked; so is every AccountFacts; the rest is numbers
        kept, self._views = self._views, {}
        rows = [self._row(a, kept.get(a["name"])) for a in status["accounts"]]
        return {
            "supervisor": status["supervisor"],
            "accounts": rows,
            "totals": _totals(rows),
            "banners": self._masked_again("banners", self._banners(status, rows)),
            "generated_utc": iso_ms(self.clock()),
        }

    def _row(self, account: dict[str, Any], kept: _ViewRow | None) -> dict[str, Any]:
        """``account``'s row of the page: ``kept`` (the last build's) when none of its
        inputs changed (its status row but for the uptime, today's figures, its log's and
        its journal's files), with the uptime now; else made again."""
        name = account["name"]
        journal = self._journal_files(name)  # looked at once a row, unless read below
        today = self._today(name, journal)
        if kept is None or today is not kept.today:
            # read just now: a read can itself change the journal's files (its first
            # open after the writer closed makes the -wal): its version taken after
            journal = self._journal_files(name)
        log = self._log_stamp(name)
        if kept is not None and today is kept.today and (log, journal) == (kept.log, kept.journal):
            changed = moved(kept.account, account)
            if changed in ([], ["uptime_s"]):
                if changed:
                    kept.row = {**kept.row, "uptime_s": account["uptime_s"]}
                kept.account, self._views[name] = account, kept
                return kept.row
        row = self._new_row(account, today, log, journal)
        self._views[name] = _ViewRow(account, today, log, journal, row)
        return row

    def _new_row(
        self, account: dict[str, Any], today: dict[str, Any], log: object, journal: object
    ) -> dict[str, Any]:
        info = self.accounts.get(account["name"])
        return {
            **account,  # status --json's row: the worker's state, positions, P&L, uncertain
            "strategy": info.strategy if info else account.get("strategy"),
            "instrument": info.instrument if info else None,
            "on_stop": info.on_stop if info else None,
            "uncertain_orders": account.get("uncertain_orders") or [],
            **today,  # orders_today, equity (the sparkline)
            # what /logs and /trades answer now, in a word: a page fetches them again only
            # when it moved (most polls, for an account that did not log or trade)
            "logs_version": _version(log),
            "trades_version": _version(journal),
        }

    def _banners(self, status: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
        """What needs a look: trades left open, uncertain orders, a guardrail breach or a
        halt, a pause (and the file-level money limit's breach), a disk (nearly) full."""
        out = [{"kind": "left_open", "text": f"left open: {line}"} for line in status["left_open"]]
        risk = status.get("risk") or {}
        if risk.get("breach"):
            text = f"all accounts: {risk['breach']}: {risk.get('on_breach') or 'pause'} sent"
            out.append(_banner("breach", text))
        for row in rows:
            name, held = row["name"], row.get("open_trades") or len(row.get("positions") or ())
            if row["state"] in STOPPED_STATES and held and status["supervisor"]["running"]:
                text = f"{name}: {row['state']} with {held} trade(s) open"
                out.append(_banner("left_open", text))
            if row["uncertain_orders"]:
                refs = ", ".join(row["uncertain_orders"])
                out.append(_banner("uncertain", f"{name}: order(s) UNCERTAIN ({refs})"))
            if row["state"] == State.HALTED:
                why = row.get("halted_reason") or "no reason given"
                out.append(_banner("breach", f"{name}: HALTED ({why})"))
            elif row["state"] == State.PAUSED:
                why = row.get("paused_reason") or "no reason given"
                out.append(_banner("paused", f"{name}: PAUSED ({why})"))
            elif row.get("blocked_by"):
                out.append(_banner("breach", f"{name}: orders blocked ({row['blocked_by']})"))
        free = self.disk_free(self.layout.path)
        if 0 <= free < DISK_LOW_BYTES:
            text = f"disk nearly full: {free // (1024 * 1024)} MB free for {self.layout.path}"
            out.append(_banner("disk", text))
        return out

    def _tail(self, name: str) -> list[dict[str, Any]]:
        """The log's last lines: what was appended since the last read is parsed, the
        lines before it kept (a tick's few lines, not 200 lines at every tick); the whole
        window again when the file was replaced or cut."""
        path = self.layout.account(name).log
        try:
            with path.open("rb") as handle:
                found = os.fstat(handle.fileno())
                tail = self._tails.get(name)
                if tail is None or not tail.follows(found.st_ino, found.st_size):
                    tail = self._tails[name] = _Tail.at(found.st_ino, found.st_size)
                handle.seek(tail.offset)
                data = handle.read(found.st_size - tail.offset)
        except OSError:
            return []
        partial = tail.add(data, lambda text: self._log_line(name, text))
        rows = [row for _start, row in tail.lines]
        # a line being written: shown as it is now, read again next time
        rows += [self._log_line(name, text) for text in partial]
        return rows[-LOG_LINES:]

    def _log_line(self, name: str, text: str) -> dict[str, Any]:
        entry = logs_view.parse(text, name)
        return {
            "ts": iso_ms(entry.ts) if entry.ts else None,
            "stream": entry.stream,
            "line": self.redact(entry.line),
        }

    def _journal(self, name: str) -> tuple[reader.JournalTrade, ...] | None:
        def read() -> tuple[reader.JournalTrade, ...] | None:
            path = self.layout.account(name).journal
            try:  # today's last orders and those held: not a day of them at every change
                return reader.newest_trades(
                    path,
                    name,
                    since=self._midnight(),
                    newest=TRADE_ROWS,
                    connections=self._connections,
                )
            except JournalError:
                return None

        stamp = self._journal_stamp(name)
        result = self._cached(f"journal:{name}", 0.0, read, stamp=stamp)
        return cast(tuple[reader.JournalTrade, ...] | None, result)

    def _today(self, name: str, journal: object) -> dict[str, Any]:
        """``orders_today``: how many orders the journal holds since 0:00 UTC (None: no
        journal); ``equity``: today's NAV, thinned to :data:`SPARK_POINTS`. One read of
        the journal for both, of what was written since the last read (reading all of
        today twice every 15 s for 50 accounts was most of what the dashboard cost).
        ``journal``: its files as they are now (:meth:`_journal_files`); a new object
        when it was read again."""

        def read() -> dict[str, Any]:
            start, now = self._midnight(), self.clock()
            tally = self._tallies.get(name)
            if tally is None or tally.day != start:
                tally = self._tallies[name] = _Tally(start, start)
            path = self.layout.account(name).journal
            try:  # only what was created since the last read
                found = reader.activity(path, name, tally.cursor, connections=self._connections)
            except JournalError:  # none yet, or unreadable now
                return {"orders_today": None, "equity": []}
            tally.add_navs(found.navs)
            count = tally.add(found.created, max(start, now - TALLY_OVERLAP_S))
            return {"orders_today": count, "equity": _thin(tally.navs, SPARK_POINTS)}

        stamp = functools.partial(_given, journal)
        result: dict[str, Any] = self._cached(f"today:{name}", EQUITY_TTL_S, read, stamp=stamp)
        return result

    def _journal_stamp(self, name: str) -> Callable[[], object]:
        """The journal's files as they are (an idle account's journal does not change:
        its reads are reused, not repeated), and the day (today's view starts at 0:00)."""
        return functools.partial(self._journal_files, name)

    def _log_stamp(self, name: str) -> FileSignature | None:
        if name not in self._logs:
            self._logs[name] = str(self.layout.account(name).log)
        return signature(self._logs[name])

    def _journal_files(self, name: str) -> object:
        paths = self._journals.get(name)
        if paths is None:  # made once: two stamps a row a build
            journal = str(self.layout.account(name).journal)
            paths = self._journals[name] = (journal, journal + "-wal")
        # as final_report.signature (a commit changes the WAL, a checkpoint the database)
        return tuple(map(signature, paths)), self._midnight()

    # --- helpers ---------------------------------------------------------------------

    def _known(self, name: str) -> None:
        if name not in {a["name"] for a in self.status()["accounts"]}:
            raise KeyError(name)

    def _midnight(self) -> float:
        now = self.clock()
        return now - now % DAY_S

    def _cached(
        self,
        key: str,
        ttl_s: float,
        make: Callable[[], Any],
        *,
        stamp: Callable[[], object] | None = None,
    ) -> Any:
        """``make()``, at most every ``ttl_s``; with ``stamp``, not even then while what
        it was made from is unchanged."""
        # One lock for every key: a miss is a few file reads, and concurrent pages then
        # wait for one read instead of all doing it.
        with self._lock:
            now = time.monotonic()
            hit = self._cache.get(key)
            if hit is not None and now - hit.at < ttl_s:
                return hit.value
            current = None if stamp is None else stamp()
            if hit is not None and current is not None and current == hit.stamp:
                hit.at = now
                return hit.value
            self._cache[key] = _Cached(now, make(), current)
            return self._cache[key].value


@dataclass
class _Merged:
    """An account's row as :func:`~multirun.ops.status.merge` made it, what it was made
    of (the supervisor's entry and the status file, by identity; the rest by value), and
    its row of the status document as shown last."""

    entry: ProcessEntry | None
    worker: WorkerStatus
    rest: tuple[bool, bool, str | None]  # running, supervised, placed
    row: fleet_status.AccountStatus
    raw: dict[str, Any] | None = None  # the row last shown as a dict (its uptime then)
    shown: dict[str, Any] | None = None  # it masked: the row shown (its uptime now)
    shown_of: fleet_status.AccountStatus | None = None  # what it is of: ``row`` or the last


@dataclass(slots=True)
class _ViewRow:
    """An account's row of the page and what it was made of."""

    account: dict[str, Any]  # its row of the status document (masked)
    today: dict[str, Any]  # Fleet._today's, by identity
    log: object  # its log's signature
    journal: object  # its journal's files (Fleet._journal_files)
    row: dict[str, Any]


@dataclass
class _Tally:
    """An account's orders created today, counted read after read, and its NAV points
    of today: each read asks the journal only for what was written since ``cursor``
    (re-reading the whole day every 15 s for 50 accounts grew with the day: most of what
    the dashboard cost by evening). Every order created in [day, cursor) is counted;
    those created since ``cursor`` (read again next time, within the overlap) are
    remembered so none counts twice; so are the times of the NAV points since then."""

    day: float  # today's 0:00 UTC
    cursor: float
    count: int = 0
    recent: dict[str, float] = field(default_factory=dict)  # order_ref -> created_ts
    navs: array[float] = field(default_factory=lambda: array("d"))  # oldest first
    recent_navs: set[float] = field(default_factory=set)  # their times since ``cursor``

    def add_navs(self, points: Sequence[reader.NavPoint]) -> None:
        """Append the NAV of ``points`` (read since :attr:`cursor`, oldest first) not
        appended yet; call before :meth:`add`, which moves the cursor."""
        for point in points:
            if point.ts >= self.day and point.ts not in self.recent_navs:
                self.navs.append(point.nav)
                self.recent_navs.add(point.ts)

    def add(self, trades: Sequence[reader.Created], cursor: float) -> int:
        """Count ``trades`` (created since :attr:`cursor`); the next read starts at ``cursor``."""
        for trade in trades:
            if (
                trade.created_ts >= max(self.day, self.cursor)
                and trade.order_ref not in self.recent
            ):
                self.recent[trade.order_ref] = trade.created_ts
                self.count += 1
        self.cursor = cursor
        self.recent = {ref: ts for ref, ts in self.recent.items() if ts >= cursor}
        self.recent_navs = {ts for ts in self.recent_navs if ts >= cursor}
        return self.count


@dataclass
class _Tail:
    """An account's log tail, read as the file grows: its lines that start within the
    last :data:`LOG_TAIL_BYTES` (the first line of a file longer than that may be cut:
    it is left out), at most :data:`LOG_LINES` of them, each parsed once."""

    inode: int
    offset: int  # where the next read starts: past the last whole line read
    lines: deque[tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=LOG_LINES)
    )  # (where its line starts in the file, the row), oldest first

    @classmethod
    def at(cls, inode: int, size: int) -> _Tail:
        """A tail of a file of ``size`` bytes seen for the first time (or replaced)."""
        return cls(inode, max(0, size - LOG_TAIL_BYTES))

    def follows(self, inode: int, size: int) -> bool:
        """Whether the file is this tail's, grown by at most a window (else read anew)."""
        return inode == self.inode and self.offset <= size <= self.offset + LOG_TAIL_BYTES

    def add(self, data: bytes, parse: Callable[[str], dict[str, Any]]) -> list[str]:
        """Take in ``data`` (read at :attr:`offset`, to the file's end): each whole line
        parsed and kept, those now out of the window dropped; what follows the last
        newline (a line being written, read again next time) is returned if in it."""
        end_of_file = self.offset + len(data)
        whole = data.rfind(b"\n") + 1
        for piece in data[:whole].split(b"\n")[:-1]:
            # as str.splitlines() of the whole window cut them (\r, form feeds...)
            for text in piece.decode("utf-8", errors="replace").splitlines() or [""]:
                self.lines.append((self.offset, parse(text)))
            self.offset += len(piece) + 1
        while self.lines and end_of_file - self.lines[0][0] >= LOG_TAIL_BYTES:
            self.lines.popleft()  # started before the window (or at it: maybe cut)
        if end_of_file - self.offset >= LOG_TAIL_BYTES:
            return []
        return data[whole:].decode("utf-8", errors="replace").splitlines()


def _banner(kind: str, text: str) -> dict[str, str]:
    return {"kind": kind, "text": text}


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> float | None:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        return sum(values) if values else None

    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    return {
        "accounts": len(rows),
        "states": states,
        "nav": total("nav"),
        "unrealized_pl": total("unrealized_pl"),
        "realized_pl_today": total("realized_pl_today"),
        "orders_today": total("orders_today"),
        "open_trades": total("open_trades"),
        "uncertain_orders": sum(len(r["uncertain_orders"]) for r in rows),
    }


def _times(trade: reader.JournalTrade) -> list[float]:
    return [t for t in (trade.created_ts, trade.opened_ts, trade.closed_ts) if t is not None]


def _trade_row(trade: reader.JournalTrade) -> dict[str, Any]:
    return {
        "order_ref": trade.order_ref,
        "instrument": trade.instrument,
        "side": trade.side,
        "volume": trade.volume,
        "state": trade.state,
        "opened_utc": iso_ms(trade.opened_ts) if trade.opened_ts else None,
        "closed_utc": iso_ms(trade.closed_ts) if trade.closed_ts else None,
        "fill_price": trade.fill_price,
        "close_price": trade.close_price,
        "realized_pl": trade.realized_pl,
    }


def _thin(values: Sequence[float], most: int) -> list[float]:
    """At most ``most`` points, evenly picked, the last one always kept."""
    if len(values) <= most:
        return list(values)
    step = (len(values) - 1) / (most - 1)
    return [values[round(i * step)] for i in range(most)]


def _same(was: Any, now: Any) -> bool:
    """Equal and written alike (1, 1.0 and True are equal, not alike in JSON)."""
    if was is now:
        return True
    if type(was) is not type(now) or was != now:
        return False
    if isinstance(now, list):
        return all(map(_same, was, now))
    if isinstance(now, dict):
        return all(_same(was[key], value) for key, value in now.items())
    return True


def _row_masked(
    row: dict[str, Any],
    kept: tuple[dict[str, Any], dict[str, Any]] | None,
    changed: list[tuple[dict[str, Any], str]],
) -> dict[str, Any]:
    """``row`` masked as the last build's (``kept``: as read, as masked) where alike; each
    field with text that is new or changed left as it is and listed in ``changed`` to be
    masked. Most fields of a row are the very objects of the last build (the status file
    and the supervisor's entry read again only when they changed): those are found by
    identity at C speed, and only the others compared."""
    if kept is not None and tuple(kept[0]) == tuple(row):
        raw, done = kept
        masked = done.copy()
        for key in compress(row, map(is_not, raw.values(), row.values())):
            value = row[key]
            if not _has_text(value):  # the uptime too: a number, new every build
                masked[key] = value
            elif not _same(raw[key], value):
                masked[key] = value
                changed.append((masked, key))
        return masked
    raw, done = kept or ({}, {})
    masked = {}
    for key, value in row.items():
        masked[key] = value
        if not _has_text(value):
            continue
        if key in raw and _same(raw[key], value):
            masked[key] = done[key]
        else:
            changed.append((masked, key))
    return masked


def _has_text(value: Any) -> bool:
    """Whether ``value`` may hold a string (a number, true, false or null cannot)."""
    return value is not None and type(value) not in _PLAIN


_PLAIN = (int, float, bool)


def _masked(document: Any, redact: Redactor) -> Any:
    """``document`` with every secret masked: the last line of defence before a page."""
    text = json.dumps(document)
    masked = redact(text)
    return document if masked == text else json.loads(masked)


def moved(was: dict[str, Any], now: dict[str, Any]) -> list[str] | None:
    """The keys of ``now`` whose values are not the very objects of ``was`` (found at C
    speed: a row made of what was kept holds the same objects); None when their keys
    differ, or their order."""
    if len(was) != len(now) or any(map(ne, was, now)):
        return None
    return list(compress(now, map(is_not, was.values(), now.values())))


def _given(value: object) -> object:
    return value


def _version(stamp: object) -> str:
    """A stamp (nested tuples of numbers, None) as a short word for the page to compare."""
    return format(hash(stamp) & 0xFFFFFFFFFFFF, "x")


def _disk_free(path: Path) -> int:
    try:
        stats = os.statvfs(path)
    except OSError:
        return -1
    return stats.f_bavail * stats.f_frsize


def watched(view: locate.FileView | None) -> Callable[[], locate.FileView | None]:
    """``view``, read again only when its file changed (a reload may have edited it)."""
    state: dict[str, Any] = {"view": view, "stamp": _stamp(view)}

    def current() -> locate.FileView | None:
        stamp = _stamp(state["view"])
        if stamp != state["stamp"]:
            state["view"], state["stamp"] = locate.refresh(state["view"]), stamp
        result: locate.FileView | None = state["view"]
        return result

    return current


def _stamp(view: locate.FileView | None) -> tuple[int, int] | None:
    if view is None:
        return None
    try:
        stat = view.path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
