"""The journal's SQLite schema, its version, and the in-place migration of older journals.

The version lives in ``PRAGMA user_version``: 0 is the first schema (no version set),
:data:`VERSION` the current one. Opening a journal of an older version (0 for a new,
empty file) creates the first schema's tables if missing and applies each later step,
all in one IMMEDIATE transaction that re-reads the version first, so two processes
opening an old journal at once migrate it once, and a new journal costs one commit. Old
rows keep working: new columns are NULL for them (a price nobody recorded).

Version 2 (issue 16) keeps the money:

- ``orders.fill_price``, ``orders.filled_ts``: the open price and time, recorded when
  the trade is first listed; ``orders.close_price``, ``orders.realized_pl``: recorded
  when the close is confirmed (``closed_ts`` is the close time);
  ``orders.price_source``: where the latest of these figures came from:
  ``'history'`` (the server's ``/strategy_trade``), ``'listing'`` (the open price in
  ``/opened_trades``), ``'quote'`` (the last quote the worker saw; a fallback).
- ``equity (ts, nav, realized_pl, unrealized_pl)``: the server's own ``/balance``
  figures, sampled by the worker (:mod:`multirun.equity`).

Version 3 (issue 27) indexes ``orders.closed_ts`` and ``orders.created_ts``: every tick
sums the day's realized P&L (``closed_ts >= day start``) and counts the orders of the
last hour (``created_ts >= an hour ago``). Without them each was a scan of every order
ever journaled: 6 ms a tick each at 100,000 orders (about nine days of an account
trading two ticks in three every 5 s), three times a whole tick's CPU; with them, a few
rows read whatever the journal's age.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from multirun.core.errors import JournalError

VERSION = 3
# SQLite's page cache per connection, in KiB. Its default (2,000 KiB) is filled page by
# page as the journal grows, and kept: SQLite's memory in a worker rose from 376 KiB at
# 500 orders to 2,265 KiB at 10,000 (a day or two of trading), and its RSS with it. A
# worker reads its orders from its mirror (store.py) and writes at the journal's end, so
# few pages are hot. Measured (20,000 orders through the store, tmpfs): with 256, SQLite's
# memory stays at 467 KiB from 2,000 orders on, at the same CPU; with 64 (297 KiB) a
# trading tick (bench/tick_cost.py) cost ~10% more CPU, its pages no longer all held.
CACHE_KIB = 256


@dataclass(frozen=True)
class JournalOrder:
    """One row of ``orders``, as :class:`multirun.account.journal.store.Journal` returns it."""

    id: int
    order_ref: str
    instrument: str
    side: str
    volume: float
    origin: str
    state: str
    trade_id: str | None
    created_ts: float
    send_ended_ts: float | None
    acked_ts: float | None
    listed_ts: float | None
    close_requested_ts: float | None
    closed_ts: float | None
    note: str
    # Schema v2: None for rows nobody priced.
    fill_price: float | None = None
    filled_ts: float | None = None
    close_price: float | None = None
    realized_pl: float | None = None
    price_source: str | None = None


_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_ref TEXT NOT NULL UNIQUE,
    instrument TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    volume REAL NOT NULL,
    origin TEXT NOT NULL DEFAULT 'sent',
    state TEXT NOT NULL,
    trade_id TEXT,
    created_ts REAL NOT NULL,
    send_ended_ts REAL,
    acked_ts REAL,
    listed_ts REAL,
    close_requested_ts REAL,
    closed_ts REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state);
CREATE TABLE IF NOT EXISTS strategy_state (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT);
"""

# Step n takes a journal from version n - 1 to version n.
_STEPS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE orders ADD COLUMN fill_price REAL",
        "ALTER TABLE orders ADD COLUMN filled_ts REAL",
        "ALTER TABLE orders ADD COLUMN close_price REAL",
        "ALTER TABLE orders ADD COLUMN realized_pl REAL",
        "ALTER TABLE orders ADD COLUMN price_source TEXT",
        "CREATE TABLE IF NOT EXISTS equity (ts REAL NOT NULL, nav REAL,"
        " realized_pl REAL, unrealized_pl REAL)",
        "CREATE INDEX IF NOT EXISTS equity_ts ON equity (ts)",
    ),
    3: (
        "CREATE INDEX IF NOT EXISTS orders_closed_ts ON orders (closed_ts)",
        "CREATE INDEX IF NOT EXISTS orders_created_ts ON orders (created_ts)",
    ),
}


# A new journal gets version 2's schema as it stands (no ALTER TABLE steps: each makes
# SQLite re-parse the schema), then any later step; tests/test_journal_start_cost.py
# checks it equals the first schema migrated step by step.
_SCHEMA_NEW_VERSION = 2
_SCHEMA_NEW = (
    _SCHEMA_V1.replace(
        "    note TEXT NOT NULL DEFAULT ''\n);",
        "    note TEXT NOT NULL DEFAULT '',\n"
        + ",\n".join("    " + sql.partition("ADD COLUMN ")[2] for sql in _STEPS[2][:5])
        + "\n);",
    )
    + ";\n".join(_STEPS[2][5:])
    + ";\n"
)


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> None:
    """Bring ``db`` (autocommit mode) to :data:`VERSION` in one IMMEDIATE transaction.

    A current journal is only read (its version). Otherwise the version is re-read under
    the write lock (another process may have migrated meanwhile), then the first schema's
    tables and each later step go in the same transaction: one commit (one forced write)
    instead of one per statement, and a crash leaves the old schema whole or the new one.
    A journal newer than this program (a downgrade) is refused: its writer may rely on
    columns we would not fill."""
    if version(db) != VERSION:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = version(db)
            if found < VERSION:
                if found == 0 and not _has_orders(db):  # a new journal
                    _run_script(db, _SCHEMA_NEW)
                    first = _SCHEMA_NEW_VERSION + 1
                else:
                    _run_script(db, _SCHEMA_V1)
                    first = max(2, found + 1)
                for target in range(first, VERSION + 1):
                    for sql in _STEPS[target]:
                        db.execute(sql)
                db.execute(f"PRAGMA user_version = {VERSION}")
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
    if version(db) > VERSION:
        raise JournalError(
            f"journal schema version {version(db)} is newer than this program's ({VERSION}):"
            " upgrade multirun"
        )


def _has_orders(db: sqlite3.Connection) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'orders'"
    return db.execute(sql).fetchone() is not None


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` in the transaction under way (``executescript``
    would commit it first)."""
    for sql in script.split(";"):
        if sql.strip():
            db.execute(sql)


class CorruptJournal(JournalError):
    """The journal file is damaged (SQLite: malformed, or not a database at all)."""


# SQLite's primary result codes for a damaged file (the low byte of an extended code).
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def damaged(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the database file itself is damaged (not busy, full or denied)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _DAMAGED


def quick_check(db: sqlite3.Connection, path: Path) -> None:
    """Raise CorruptJournal unless SQLite's ``PRAGMA quick_check`` finds ``db`` whole.

    Reads every page once (no index cross-check): 3 ms on a 1.3 MB journal of 5,000 orders
    and 20,000 equity points, against 0.3 ms for the open alone; a truncated file can
    open and answer some reads while its lost pages hold the trades still open."""
    try:
        found = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        if damaged(exc):
            raise CorruptJournal(f"journal {path}: {exc}") from None
        raise
    if found != ["ok"]:
        raise CorruptJournal(f"journal {path}: quick_check: {'; '.join(found[:3])}")


def _prepare(db: sqlite3.Connection, path: Path, *, check: bool) -> None:
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(f"journal {path}: cannot use WAL mode (got {mode})")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # negative: KiB, not pages
    if check:
        quick_check(db, path)
    migrate(db)


def connect(path: Path, *, check: bool = False) -> sqlite3.Connection:
    """Open (creating 0700/0600 if needed) the journal in WAL mode with full syncs,
    migrated to the current schema. ``check``: :func:`quick_check` it first. A damaged
    file raises :class:`CorruptJournal`, any other failure JournalError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        # Create the file ourselves so it is born 0600; SQLite gives its -wal and -shm
        # files the database file's permissions.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        db.row_factory = sqlite3.Row
        try:
            _prepare(db, path, check=check)
        except BaseException:
            db.close()  # a damaged file is renamed next: no connection left on it
            raise
        return db
    except OSError as exc:
        raise JournalError(f"cannot open journal {path}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        kind = CorruptJournal if damaged(exc) else JournalError
        raise kind(f"cannot open journal {path}: {exc}") from None
