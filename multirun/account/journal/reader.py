"""Reading account journals for reports: read-only, lock-free, tolerant of older journals.

A report never runs an account: it opens each ``journal.sqlite`` with SQLite's read-only
URI (``file:...?mode=ro``), never takes ``worker.lock``, and works with or without a
supervisor. A caller reading the same journals every few seconds (the dashboard) passes
:class:`Connections`: one read-only connection per journal, kept between reads (opening
the file and loading its schema was most of a read), opened again when the file is
replaced. Journals written before prices were kept lack the ``orders`` price columns
(``fill_price``, ``filled_ts``, ``close_price``, ``realized_pl``, ``price_source``) and the
``equity`` table: those read as unknown (None, no equity points), never as an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from multirun.core.errors import JournalError

CLOSED = "CLOSED"
HELD = ("OPEN", "CLOSING")  # may still be open on the server
_BASE = ("order_ref", "instrument", "side", "volume", "state", "trade_id", "created_ts")
_OPTIONAL = (
    "acked_ts",
    "listed_ts",
    "closed_ts",
    "fill_price",
    "filled_ts",
    "close_price",
    "realized_pl",
    "price_source",
)


@dataclass(frozen=True)
class JournalTrade:
    """One journaled order, as a report sees it (None: the journal does not know)."""

    order_ref: str
    instrument: str
    side: str
    volume: float
    state: str
    trade_id: str | None
    created_ts: float
    opened_ts: float | None  # fill time, else ack or listing time
    closed_ts: float | None
    fill_price: float | None = None
    close_price: float | None = None
    realized_pl: float | None = None
    price_source: str | None = None

    @property
    def is_closed(self) -> bool:
        return self.state == CLOSED

    @property
    def is_held(self) -> bool:
        return self.state in HELD

    @property
    def hold_s(self) -> float | None:
        if self.closed_ts is None or self.opened_ts is None:
            return None
        return max(0.0, self.closed_ts - self.opened_ts)


@dataclass(frozen=True)
class EquityPoint:
    """One sample of the server's own figures for the account."""

    ts: float
    nav: float | None
    realized_pl: float | None
    unrealized_pl: float | None


@dataclass(frozen=True)
class AccountLog:
    """What one account's journal says: its orders and its equity series, oldest first."""

    name: str
    trades: tuple[JournalTrade, ...]
    equity: tuple[EquityPoint, ...]
    has_prices: bool  # the journal has the price columns (a newer journal)


class Connections:
    """One read-only connection per journal, kept between reads (never a writer: the
    ``mode=ro`` URI, and ``query_only``). No transaction is held between reads: each
    query sees what was committed before it began (WAL), and never holds back the
    writer's checkpoints while idle; a journal replaced (set aside and made
    anew: another inode) or removed is opened again or dropped. Thread-safe: one read of
    a journal at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[tuple[int, int], sqlite3.Connection]] = {}

    @contextlib.contextmanager
    def reading(self, path: Path) -> Iterator[sqlite3.Connection]:
        """The connection to ``path``'s journal as it is now, for one read."""
        with self._lock:
            try:
                st = os.stat(path)
            except OSError:
                self._drop(path)
                raise sqlite3.OperationalError(f"no journal at {path}") from None
            kept = self._open.get(path)
            if kept is None or kept[0] != (st.st_dev, st.st_ino):
                self._drop(path)
                db = _connect(path, check_same_thread=False)
                db.execute("PRAGMA query_only = ON")
                kept = self._open[path] = ((st.st_dev, st.st_ino), db)
            try:
                yield kept[1]
            except sqlite3.Error:
                self._drop(path)  # whatever went wrong, the next read starts afresh
                raise

    def close(self) -> None:
        with self._lock:
            for path in list(self._open):
                self._drop(path)

    def _drop(self, path: Path) -> None:
        kept = self._open.pop(path, None)
        if kept is not None:
            kept[1].close()


def read(
    path: Path,
    name: str,
    *,
    connections: Connections | None = None,
) -> AccountLog:
    """The journal at ``path`` read once, read-only, whole (a report's); JournalError if it
    cannot be read. ``connections``: the journal read through the connection kept there
    (else opened and closed for this read). A live view reads less: :func:`activity`,
    :func:`newest_trades`."""
    if not path.is_file():
        raise JournalError(f"{name}: no journal at {path}")
    opened = _open_ro(path) if connections is None else connections.reading(path)
    try:
        with opened as db:
            columns = _columns(db, "orders")
            trades = _trades(db, columns) if columns else ()
            equity = _equity(db) if _columns(db, "equity") else ()
    except sqlite3.Error as error:
        raise JournalError(f"{name}: cannot read {path}: {error}") from None
    has_prices = "realized_pl" in columns
    return AccountLog(name, trades, equity, has_prices)


def newest_trades(
    path: Path, name: str, *, since: float, newest: int, connections: Connections
) -> tuple[JournalTrade, ...]:
    """The ``newest`` orders (by creation) of those created or closed since ``since``, and
    every one still held however old, oldest first; JournalError if the journal cannot be
    read. A day's tail: the dashboard reads it at every change of a journal, which a day
    of orders every few seconds (thousands) made slower by the hour."""
    try:
        with connections.reading(path) as db:
            columns = _columns(db, "orders")
            if not columns:
                return ()
            recent = "created_ts >= ?" + (" OR closed_ts >= ?" if "closed_ts" in columns else "")
            params = (since,) * recent.count("?")
            newest_first = " ORDER BY created_ts DESC, rowid DESC LIMIT ?"
            recent_rows = _trades(db, columns, f" WHERE {recent}", (*params, newest), newest_first)
            held = _trades(db, columns, f" WHERE {_HELD_WHERE}", HELD)
    except sqlite3.Error as error:
        raise JournalError(f"{name}: cannot read {path}: {error}") from None
    shown = {t.order_ref for t in recent_rows}
    both = [*recent_rows, *(t for t in held if t.order_ref not in shown)]
    return tuple(sorted(both, key=lambda t: t.created_ts))


class Created(NamedTuple):
    """An order's reference and when it was created (what a count of orders needs)."""

    order_ref: str
    created_ts: float


class NavPoint(NamedTuple):
    ts: float
    nav: float


@dataclass(frozen=True)
class Activity:
    """What a journal holds since a time, lightly: the orders created and the NAV points
    (oldest first), without the rows a report reads (a trade object per order, two
    ``PRAGMA table_info`` a read: most of what the dashboard's refresh of a day's
    figures cost)."""

    created: tuple[Created, ...]
    navs: tuple[NavPoint, ...]


def activity(path: Path, name: str, since: float, *, connections: Connections) -> Activity:
    """The orders created and the NAV points since ``since``, read through ``connections``;
    JournalError if the journal cannot be read. A journal without the equity table (or its
    ``nav`` column: an older journal) has no NAV points."""
    try:
        with connections.reading(path) as db:
            rows = db.execute(
                "SELECT order_ref, created_ts FROM orders WHERE created_ts >= ?"
                " ORDER BY created_ts, rowid",
                (since,),
            )
            created = tuple(Created(str(ref), float(ts)) for ref, ts in rows)
            navs = _navs(db, since)
    except sqlite3.Error as error:
        raise JournalError(f"{name}: cannot read {path}: {error}") from None
    return Activity(created, navs)


def _navs(db: sqlite3.Connection, since: float) -> tuple[NavPoint, ...]:
    try:
        rows = db.execute(
            "SELECT ts, nav FROM equity WHERE ts >= ? AND nav IS NOT NULL ORDER BY ts", (since,)
        )
    except sqlite3.OperationalError as error:
        if str(error).startswith(("no such table", "no such column")):
            return ()  # an older journal: not an error (the connection is kept)
        raise
    return tuple(NavPoint(float(ts), float(nav)) for ts, nav in rows)


PAUSE_KEY = "pause"  # the journal's meta row of a pause (Journal.record_pause writes it)


def paused(path: Path, name: str) -> dict[str, Any] | None:
    """The account's pause as its journal records it (``reason``, ``since``, ``until``: a
    worker restarted now starts PAUSED), None when it is not paused or the journal
    predates pauses; JournalError if it cannot be read."""
    if not path.is_file():
        return None
    try:
        with _open_ro(path) as db:
            if not _columns(db, "meta"):
                return None
            row = db.execute("SELECT value FROM meta WHERE key = ?", (PAUSE_KEY,)).fetchone()
    except sqlite3.Error as error:
        raise JournalError(f"{name}: cannot read {path}: {error}") from None
    try:
        data = json.loads(row[0]) if row else None
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=check_same_thread)


@contextlib.contextmanager
def _open_ro(path: Path) -> Iterator[sqlite3.Connection]:
    db = _connect(path)
    try:
        yield db
    finally:
        db.close()


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


_HELD_WHERE = f"state IN ({', '.join('?' * len(HELD))})"


def _trades(
    db: sqlite3.Connection,
    columns: set[str],
    where: str = "",
    params: Sequence[object] = (),
    order: str = " ORDER BY created_ts, rowid",
) -> tuple[JournalTrade, ...]:
    """The orders ``where`` says (all by default), as trades, in ``order`` (oldest first
    by default)."""
    wanted = [c for c in _BASE] + [c for c in _OPTIONAL if c in columns]
    rows = db.execute(f"SELECT {', '.join(wanted)} FROM orders{where}{order}", tuple(params))
    out = []
    for values in rows:
        row = dict(zip(wanted, values, strict=True))
        opened = _first(row.get("filled_ts"), row.get("acked_ts"), row.get("listed_ts"))
        if opened is None and row["state"] in (CLOSED, *HELD):
            opened = row["created_ts"]
        out.append(
            JournalTrade(
                order_ref=row["order_ref"],
                instrument=row["instrument"],
                side=row["side"],
                volume=float(row["volume"]),
                state=row["state"],
                trade_id=row["trade_id"],
                created_ts=float(row["created_ts"]),
                opened_ts=opened,
                closed_ts=_num(row.get("closed_ts")),
                fill_price=_num(row.get("fill_price")),
                close_price=_num(row.get("close_price")),
                realized_pl=_num(row.get("realized_pl")),
                price_source=row.get("price_source") or None,
            )
        )
    return tuple(out)


def _equity(db: sqlite3.Connection) -> tuple[EquityPoint, ...]:
    columns = _columns(db, "equity")
    wanted = [c for c in ("nav", "realized_pl", "unrealized_pl") if c in columns]
    select = ", ".join(["ts", *wanted])
    points = []
    rows = db.execute(f"SELECT {select} FROM equity WHERE ts IS NOT NULL ORDER BY ts")
    for values in rows:
        row = dict(zip(["ts", *wanted], values, strict=True))
        points.append(
            EquityPoint(
                ts=float(row["ts"]),
                nav=_num(row.get("nav")),
                realized_pl=_num(row.get("realized_pl")),
                unrealized_pl=_num(row.get("unrealized_pl")),
            )
        )
    return tuple(points)


def _num(value: object) -> float | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _first(*values: object) -> float | None:
    for value in values:
        number = _num(value)
        if number is not None:
            return number
    return None
