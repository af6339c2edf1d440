"""Journal batches: writes that protect no order ride with the next one that does.

Inside :meth:`Journal.batch` (a worker's tick), prices, listed times, equity points and
the strategy's state wait in the open transaction, and so do an ack and a confirmed
close (the restart asks the server about an intent or a CLOSING row anyway); an intent
or a close request (the writes that protect an order) commits them with itself, durably.
A crash loses at most the deferred ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from multirun.account.journal.store import CLOSED, CLOSING, INTENT, OPEN, Journal
from multirun.core.errors import JournalError
from multirun.core.statedir import StateDir

PREFIX = "mr-alpha-"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def journal(state: Path) -> Iterator[Journal]:
    j = Journal.for_account(StateDir(state).account("alpha"), PREFIX)
    yield j
    j.close()


def reader(state: Path) -> Journal:
    """Another connection to the journal, as ``multirun report`` opens it (no lock)."""
    return Journal(StateDir(state).account("alpha").journal, PREFIX)


def test_deferred_writes_wait_for_the_next_order_write(journal: Journal, state: Path) -> None:
    other = reader(state)
    try:
        with journal.batch():
            journal.save_state({"draws": 1})
            journal.add_equity(1.0, 100.0, 0.0, 0.0)
            assert journal.load_state() == {"draws": 1}  # our own reads see them
            assert other.load_state() == {}  # not committed yet
            intent = journal.new_intent("BTCUSD", "BUY", 1.0)  # commits them with it
            assert other.load_state() == {"draws": 1}
            assert other.get(intent.order_ref).state == INTENT
            journal.mark_acked(intent.order_ref, "7")
            assert journal.get(intent.order_ref).state == OPEN
            assert other.get(intent.order_ref).state == INTENT  # the ack waits too
            journal.mark_listed([intent.order_ref])
            journal.record_fill(intent.order_ref, 97000.0, None, "listing")
            assert journal.get(intent.order_ref).fill_price == 97000.0
            assert other.get(intent.order_ref).fill_price is None
        row = other.get(intent.order_ref)  # the end of the batch commits them
        assert row.state == OPEN and row.fill_price == 97000.0 and row.listed_ts is not None
        with journal.batch():
            journal.mark_close_requested([intent.order_ref])  # protects the close: at once
            assert other.get(intent.order_ref).state == CLOSING
            journal.mark_closed([intent.order_ref])
            assert other.get(intent.order_ref).state == CLOSING  # the confirmation waits
            second = journal.new_intent("BTCUSD", "SELL", 1.0)  # the next order's commit
            assert other.get(intent.order_ref).state == CLOSED
            assert other.get(second.order_ref).state == INTENT
    finally:
        other.close()


def test_outside_a_batch_every_write_commits_at_once(journal: Journal, state: Path) -> None:
    other = reader(state)
    try:
        journal.save_state({"draws": 2})
        assert other.load_state() == {"draws": 2}
    finally:
        other.close()


def test_a_batch_whose_block_raises_still_commits(journal: Journal, state: Path) -> None:
    with pytest.raises(RuntimeError), journal.batch():
        journal.save_state({"draws": 3})
        raise RuntimeError("the tick failed")
    other = reader(state)
    try:
        assert other.load_state() == {"draws": 3}
    finally:
        other.close()


def test_a_refused_intent_leaves_the_deferred_writes_pending(journal: Journal, state: Path) -> None:
    journal.refuse("test")
    with journal.batch():
        journal.save_state({"draws": 4})
        with pytest.raises(JournalError):
            journal.new_intent("BTCUSD", "BUY", 1.0)
        assert journal.load_state() == {"draws": 4}  # refused before any statement


def test_held_rows_are_cached_in_a_batch_until_a_write(journal: Journal) -> None:
    intent = journal.new_intent("BTCUSD", "SELL", 1.0)
    journal.mark_acked(intent.order_ref, "9")
    with journal.batch():
        assert [r.order_ref for r in journal.held()] == [intent.order_ref]
        assert journal.held() == journal.held()  # a copy each time, the same rows
        journal.held().clear()  # a caller's list is its own
        assert len(journal.held()) == 1
        journal.mark_closed([intent.order_ref])
        assert journal.held() == [] and journal.get(intent.order_ref).state == CLOSED


def test_an_empty_mark_listed_is_no_transaction(journal: Journal) -> None:
    class Broken:
        def execute(self, *args: object) -> None:
            raise AssertionError("no statement expected")

    real, journal._db = journal._db, Broken()  # type: ignore[assignment]
    try:
        journal.mark_listed([])
    finally:
        journal._db = real


CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from multirun.account.journal.store import Journal
    from multirun.core.statedir import StateDir
    j = Journal.for_account(StateDir(Path(sys.argv[1])).account("alpha"), "mr-alpha-")
    with j.batch():
        j.save_state({"draws": 5})
        intent = j.new_intent("BTCUSD", "BUY", 1.0)
        j.mark_acked(intent.order_ref, "11")
        j.mark_listed([intent.order_ref])
        j.record_fill(intent.order_ref, 97000.0, None, "listing")
        print(intent.order_ref, flush=True)
        os._exit(9)  # killed mid-tick: no commit, no close
    """
)


@pytest.mark.process
def test_a_crash_in_a_batch_loses_only_the_deferred_writes(state: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(state)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 9, done.stderr
    ref = done.stdout.strip()
    journal = Journal.for_account(StateDir(state).account("alpha"), PREFIX)
    try:
        row = journal.get(ref)
        # the intent holds (the restart looks it up by orderRef, never resends it:
        # tests/account/test_worker.py::test_an_intent_found_on_the_server_is_recorded_not_resent);
        # its ack, listed time and price were lost with the process
        assert row.state == INTENT and row.trade_id is None and row.send_ended_ts is None
        assert journal.load_state() == {"draws": 5}  # committed with the intent
        assert row.fill_price is None and row.listed_ts is None
        assert journal.seq_of(journal.new_intent("BTCUSD", "BUY", 1.0).order_ref) == 2
    finally:
        journal.close()


def test_only_the_writes_that_protect_an_order_wait_for_the_disk(journal: Journal) -> None:
    """A tick's deferred writes commit at synchronous=NORMAL (no fsync: a killed process
    keeps them); an intent or a close request commits at FULL, on its own, after them."""
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    try:
        with journal.batch():
            journal.save_state({"draws": 6})
            intent = journal.new_intent("BTCUSD", "BUY", 1.0)
            journal.mark_acked(intent.order_ref, "12")
        durable = statements.index("PRAGMA synchronous=FULL")
        assert statements[:2] == ["PRAGMA synchronous=NORMAL", "BEGIN IMMEDIATE"]
        assert statements[durable - 1] == "COMMIT"  # the deferred state, on its own
        assert statements[durable + 1] == "BEGIN IMMEDIATE"
        assert any(s.startswith("INSERT INTO orders") for s in statements[durable:])
        tail = statements[statements.index("PRAGMA synchronous=NORMAL", durable) :]
        assert tail[1] == "BEGIN IMMEDIATE" and tail[-1] == "COMMIT"  # the ack, at the end
        assert all("INSERT INTO orders" not in s for s in tail)
    finally:
        journal._db.set_trace_callback(None)
