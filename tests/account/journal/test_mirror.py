"""The journal's mirror (issue 27): what its reads answer from memory is what the file says.

The worker holds the journal's lock, so it is the only writer: every write of an orders
row patches the mirror from the row as written, inside the writing transaction; a
rollback or a failed commit drops it. Checked here after each step of an order's life,
in a batch with deferred writes, and after a commit that failed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from multirun.account.journal.schema import JournalOrder
from multirun.account.journal.store import HELD, INTENT, Journal
from multirun.core.errors import JournalError
from multirun.core.statedir import StateDir
from tests.clocks import ManualClock

PREFIX = "mr-alpha-"
STATES = (HELD, (INTENT,), ("CLOSED",))


SINCE = 4e9  # a day start after every close (2096): none counts


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal.for_account(StateDir(tmp_path / "state").account("alpha"), PREFIX)
    yield j
    j.close()


def on_file(journal: Journal) -> dict[str, JournalOrder]:
    """Every row, as another connection reads the file (committed rows only)."""
    with sqlite3.connect(journal.path) as other:
        other.row_factory = sqlite3.Row
        rows = other.execute("SELECT * FROM orders ORDER BY id").fetchall()
    return {row["order_ref"]: JournalOrder(**dict(row)) for row in rows}


def agrees(journal: Journal) -> None:
    rows = on_file(journal)
    for states in STATES:
        wanted = [o for o in rows.values() if o.state in states]
        assert journal.in_states(*states) == wanted, states
    for ref, row in rows.items():
        assert journal.get(ref) == row
    with sqlite3.connect(journal.path) as other:  # the day's P&L the mirror keeps
        sql = "SELECT COALESCE(SUM(realized_pl), 0) FROM orders WHERE closed_ts >= ?"
        for since in (0.0, SINCE):
            (on_disk,) = other.execute(sql, (since,)).fetchone()
            assert journal.realized_since(since) == pytest.approx(on_disk), since
        assert journal.realized_since(0.0) == pytest.approx(
            other.execute(sql, (0.0,)).fetchone()[0]
        )
        sent = "SELECT COUNT(*) FROM orders WHERE origin = 'sent' AND created_ts >= ?"
        for since in (0.0, 1.0):  # the mirror's, then a later start: what it keeps is cut
            assert journal.sent_since(since) == other.execute(sent, (since,)).fetchone()[0]


def test_the_mirror_follows_every_write_of_an_orders_life(journal: Journal) -> None:
    agrees(journal)  # warm: from here on the reads are the mirror's
    first = journal.new_intent("BTCUSD", "BUY", 1.0)
    agrees(journal)
    journal.mark_acked(first.order_ref, "7")
    agrees(journal)
    with journal.batch():
        journal.mark_listed([first.order_ref])  # deferred: read back at once
        journal.record_fill(first.order_ref, 100.0, None, "listing")
        assert journal.get(first.order_ref).fill_price == 100.0
        second = journal.new_intent("BTCUSD", "SELL", 1.0)  # commits the deferred ones
        agrees(journal)
        journal.mark_abandoned(second.order_ref, "not placed")
    agrees(journal)
    journal.mark_close_requested([first.order_ref])
    agrees(journal)
    journal.mark_closed([first.order_ref])
    journal.record_close(first.order_ref, 101.0, 1.0, "history")
    agrees(journal)
    journal.record_close(first.order_ref, 99.0, -1.0, "history")  # priced again
    agrees(journal)
    journal.adopt("mr-alpha-OTHERS-9", "8", "BTCUSD", "BUY", 1.0)
    agrees(journal)
    assert [o.order_ref for o in journal.held()] == ["mr-alpha-OTHERS-9"]
    journal.record_close("mr-alpha-OTHERS-9", 99.5, 2.5, "history")  # priced, then closed
    agrees(journal)
    journal.mark_close_requested(["mr-alpha-OTHERS-9"])
    journal.mark_closed(["mr-alpha-OTHERS-9"])
    agrees(journal)
    journal.adopt("mr-alpha-OTHERS-9", "8", "BTCUSD", "BUY", 1.0)  # seen open again
    agrees(journal)


class FailingCommit:
    """A connection whose COMMIT fails, as on a full disk; everything else works."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_failed_commit_leaves_the_mirror_as_the_file(journal: Journal) -> None:
    kept = journal.new_intent("BTCUSD", "BUY", 1.0)
    agrees(journal)
    real = journal._db
    journal._db = FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(JournalError, match="cannot commit"):
        journal.mark_acked(kept.order_ref, "7")  # patched into the mirror, then rolled back
    journal._db = real
    assert journal.get(kept.order_ref).state == INTENT and journal.held() == []
    agrees(journal)


def test_the_mirror_keeps_every_unsettled_row_and_only_the_last_settled_ones(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker trading for weeks must not grow by every order it ever made."""
    monkeypatch.setattr("multirun.account.journal.store.SETTLED_KEPT", 2)
    still_open = journal.new_intent("BTCUSD", "BUY", 1.0)
    journal.mark_acked(still_open.order_ref, "1")
    for i in range(5):
        order = journal.new_intent("BTCUSD", "BUY", 1.0)
        journal.mark_acked(order.order_ref, str(10 + i))
        journal.mark_close_requested([order.order_ref])
        journal.mark_closed([order.order_ref])
        journal.record_close(order.order_ref, 101.0, 1.0 + i, "history")  # the sum follows
    assert journal.realized_since(0.0) == pytest.approx(15.0)
    kept = set(journal._rows_by_ref)
    assert still_open.order_ref in kept and len(kept) == 3  # the open one, the last 2 closed
    agrees(journal)  # those let go are read from the file again, as they are there
    assert len(journal._rows_by_ref) == 3


def test_the_orders_sent_in_the_last_hour_are_counted_from_memory(tmp_path: Path) -> None:
    clock = ManualClock(start=1000.0)
    account = StateDir(tmp_path / "state").account("alpha")
    journal = Journal.for_account(account, PREFIX, clock=clock)
    first = journal.new_intent("BTCUSD", "BUY", 1.0)
    journal.adopt("mr-alpha-OTHERS-1", "5", "BTCUSD", "BUY", 1.0)  # not one we sent
    assert journal.sent_since(0.0) == 1
    clock.advance(1000.0)
    journal.new_intent("BTCUSD", "SELL", 1.0)  # committed: counted without a read
    assert journal.sent_since(1500.0) == 1  # the first is before: let go
    assert journal.sent_since(0.0) == 2  # an earlier start: read from the file again
    assert journal.get(first.order_ref).origin == "sent"
    agrees(journal)
    journal.close()
