"""Journal schema v2: a v1 journal migrates in place, its rows keep working; prices, equity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from multirun.account.journal.schema import CACHE_KIB, VERSION
from multirun.account.journal.store import CLOSED, OPEN, Journal
from multirun.core.errors import JournalError

PREFIX = "mr-alpha-"

# The schema as it was before issue 16 (user_version 0), with rows written by it.
V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orders (
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
CREATE INDEX orders_state ON orders (state);
CREATE TABLE strategy_state (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT);
INSERT INTO meta VALUES ('epoch', 'OLDEPO'), ('next_seq', '3');
INSERT INTO orders (order_ref, instrument, side, volume, state, trade_id, created_ts,
    acked_ts, listed_ts, closed_ts)
    VALUES ('mr-alpha-OLDEPO-1', 'BTCUSD', 'BUY', 0.01, 'CLOSED', '11', 100, 101, 102, 200),
           ('mr-alpha-OLDEPO-2', 'BTCUSD', 'SELL', 0.02, 'OPEN', '12', 300, 301, 302, NULL);
INSERT INTO strategy_state VALUES (1, '{"n": 2}');
"""


def v1_journal(path: Path) -> Path:
    path.parent.mkdir(parents=True, mode=0o700)
    db = sqlite3.connect(path)
    db.executescript(V1)
    db.commit()
    db.close()
    return path


def test_a_v1_journal_migrates_in_place_and_its_rows_keep_working(tmp_path: Path) -> None:
    path = v1_journal(tmp_path / "alpha" / "journal.sqlite")
    journal = Journal(path, PREFIX)
    try:
        assert journal.epoch == "OLDEPO" and not journal.is_new
        old = journal.get("mr-alpha-OLDEPO-1")
        assert (old.state, old.trade_id, old.closed_ts) == (CLOSED, "11", 200)
        assert (old.fill_price, old.close_price, old.realized_pl, old.price_source) == (None,) * 4
        assert [o.order_ref for o in journal.held()] == ["mr-alpha-OLDEPO-2"]
        assert journal.load_state() == {"n": 2}
        assert journal.new_intent("BTCUSD", "BUY", 0.01).order_ref == "mr-alpha-OLDEPO-3"
        journal.record_fill("mr-alpha-OLDEPO-2", 97012.5, None, "listing")
        held = journal.get("mr-alpha-OLDEPO-2")
        assert (held.fill_price, held.filled_ts, held.state) == (97012.5, 302, OPEN)
        journal.add_equity(400.0, 1000.5, 0.5, -0.25)
    finally:
        journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION == 3
    assert db.execute("SELECT * FROM equity").fetchall() == [(400.0, 1000.5, 0.5, -0.25)]
    db.close()
    journal = Journal(path, PREFIX)  # opening a migrated journal again is a no-op
    try:
        assert tick_queries_indexed(journal)
    finally:
        journal.close()


def test_a_journal_newer_than_this_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alpha" / "journal.sqlite"
    Journal(path, PREFIX).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="newer than this program"):
        Journal(path, PREFIX)


def test_close_price_and_realized_pl_and_todays_sum(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "alpha" / "journal.sqlite", PREFIX)
    try:
        for pl in (0.98, -0.5):
            ref = journal.new_intent("BTCUSD", "BUY", 0.01).order_ref
            journal.mark_acked(ref, "777")
            journal.record_fill(ref, 97012.5, 123.0, "history")
            journal.mark_closed([ref])
            journal.record_close(ref, 97110.0, pl, "history")
        order = journal.get(ref)
        assert (order.filled_ts, order.close_price, order.realized_pl) == (123.0, 97110.0, -0.5)
        assert order.price_source == "history"
        assert journal.realized_since(0.0) == pytest.approx(0.48)
        assert journal.realized_since(order.closed_ts + 1) == 0.0
    finally:
        journal.close()


def tick_queries_indexed(journal: Journal) -> bool:
    """Whether the two queries every tick makes (Journal.realized_since, the day's
    P&L; Journal.sent_since, the orders of the last hour) read an index, not every
    order ever journaled: their SQL as sent, captured, then explained."""
    sent: list[str] = []
    journal._db.set_trace_callback(sent.append)
    try:
        journal.realized_since(0.0)
        journal.sent_since(0.0)
    finally:
        journal._db.set_trace_callback(None)
    assert len(sent) == 2
    plans = [journal._db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall() for sql in sent]
    return all(any(str(row[-1]).startswith("SEARCH orders USING INDEX") for row in plan)
               for plan in plans)  # fmt: skip


def test_the_queries_of_every_tick_read_an_index_in_a_new_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "alpha" / "journal.sqlite", PREFIX)
    try:
        assert tick_queries_indexed(journal)
    finally:
        journal.close()


def test_a_journal_keeps_a_small_page_cache_whatever_its_age(tmp_path: Path) -> None:
    """SQLite's default cache (2,000 KiB) fills as the journal grows: a worker would hold
    ~2 MiB more after a few days. Every connection the store opens, new or reopened, is
    bounded to CACHE_KIB."""
    path = tmp_path / "alpha" / "journal.sqlite"
    for _ in range(2):  # created, then reopened
        journal = Journal(path, PREFIX)
        try:
            assert journal._db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
        finally:
            journal.close()
