"""The journal: durable intents, states, orderRef counter, state dict, permissions, lock."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from multirun.account.journal.store import ABANDONED, CLOSED, CLOSING, INTENT, OPEN, Journal
from multirun.core.errors import JournalError
from multirun.core.statedir import StateDir

PREFIX = "mr-alpha-"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal.for_account(StateDir(tmp_path / "state").account("alpha"), PREFIX)
    yield j
    j.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_and_in_wal_mode(journal: Journal) -> None:
    journal.new_intent("BTCUSD", "BUY", 1.0)
    assert mode(journal.path) == 0o600
    assert mode(journal.path.parent) == 0o700
    wal = journal.path.with_name("journal.sqlite-wal")
    assert wal.exists() and mode(wal) == 0o600
    db = sqlite3.connect(journal.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_order_refs_are_unique_prefixed_and_monotonic(journal: Journal) -> None:
    refs = [journal.new_intent("BTCUSD", "BUY", 1.0).order_ref for _ in range(3)]
    epoch = journal.epoch
    assert len(epoch) == 6 and epoch.isupper()
    assert refs == [f"{PREFIX}{epoch}-1", f"{PREFIX}{epoch}-2", f"{PREFIX}{epoch}-3"]


def test_the_counter_survives_a_reopen_and_jumps_above_server_refs(tmp_path: Path) -> None:
    j = Journal.for_account(StateDir(tmp_path).account("alpha"), PREFIX)
    assert j.is_new
    j.new_intent("BTCUSD", "BUY", 1.0)
    j.close()
    j = Journal.for_account(StateDir(tmp_path).account("alpha"), PREFIX)
    ours = f"{PREFIX}{j.epoch}-"
    assert not j.is_new
    assert j.new_intent("BTCUSD", "BUY", 1.0).order_ref == f"{ours}2"
    j.adopt(f"{PREFIX}41", "900", "BTCUSD", "SELL", 1.0)  # an older journal's ref
    assert j.new_intent("BTCUSD", "BUY", 1.0).order_ref == f"{ours}42"
    j.bump_seq(99)
    assert j.new_intent("BTCUSD", "BUY", 1.0).order_ref == f"{ours}100"
    j.close()


def test_a_reset_journal_draws_a_new_epoch_so_refs_never_repeat(tmp_path: Path) -> None:
    """Issue 17 case 2: a deleted journal's refs are not reused by the next one."""
    account = StateDir(tmp_path).account("alpha")
    j = Journal.for_account(account, PREFIX)
    first = {j.new_intent("BTCUSD", "BUY", 1.0).order_ref for _ in range(3)}
    j.close()
    account.journal.unlink()
    j = Journal.for_account(account, PREFIX)
    assert j.is_new
    second = {j.new_intent("BTCUSD", "BUY", 1.0).order_ref for _ in range(3)}
    assert not first & second
    assert all(j.owns(ref) for ref in first)  # the old epoch's refs stay ours
    j.close()


def test_a_deleted_or_replaced_lock_or_journal_is_noticed(tmp_path: Path) -> None:
    account = StateDir(tmp_path).account("alpha")
    j = Journal.for_account(account, PREFIX)
    assert j.lost() is None
    account.lock.unlink()
    assert "worker.lock was deleted" in (j.lost() or "")
    account.lock.touch()  # a second process's new lock file: a different file
    assert "worker.lock was replaced" in (j.lost() or "")
    j.refuse("lost")
    with pytest.raises(JournalError, match="no new orders: lost"):
        j.new_intent("BTCUSD", "BUY", 1.0)
    j.close()


def test_an_order_moves_through_its_states(journal: Journal) -> None:
    intent = journal.new_intent("BTCUSD", "SELL", 0.5)
    assert intent.state == INTENT and intent.trade_id is None
    assert journal.intents() == [intent]
    journal.mark_acked(intent.order_ref, "123")
    row = journal.get(intent.order_ref)
    assert (row.state, row.trade_id) == (OPEN, "123")
    assert row.acked_ts is not None and row.send_ended_ts is not None
    journal.mark_close_requested([intent.order_ref])
    assert journal.get(intent.order_ref).state == CLOSING
    assert [r.order_ref for r in journal.held()] == [intent.order_ref]
    journal.mark_closed([intent.order_ref])
    assert journal.get(intent.order_ref).state == CLOSED
    assert journal.held() == [] and journal.intents() == []


def test_abandoned_intents_and_adoption(journal: Journal) -> None:
    intent = journal.new_intent("BTCUSD", "BUY", 1.0)
    journal.mark_abandoned(intent.order_ref, "not on the server")
    assert journal.get(intent.order_ref).state == ABANDONED
    # The server shows it after all: adoption makes it OPEN again, never a new row.
    journal.adopt(intent.order_ref, "77", "BTCUSD", "BUY", 1.0)
    row = journal.get(intent.order_ref)
    assert (row.state, row.trade_id) == (OPEN, "77")
    assert len(journal.all_orders()) == 1
    adopted = journal.adopt(f"{PREFIX}9", "78", "BTCUSD", "SELL", 2.0)
    assert adopted.origin == "adopted" and adopted.state == OPEN


def test_sent_since_counts_our_orders_not_adopted_ones(journal: Journal) -> None:
    journal.new_intent("BTCUSD", "BUY", 1.0)
    journal.new_intent("BTCUSD", "SELL", 1.0)
    journal.adopt(f"{PREFIX}50", "1", "BTCUSD", "BUY", 1.0)
    assert journal.sent_since(0) == 2
    assert journal.sent_since(4_000_000_000) == 0


def test_strategy_state_round_trips(tmp_path: Path) -> None:
    j = Journal.for_account(StateDir(tmp_path).account("alpha"), PREFIX)
    assert j.load_state() == {}
    j.save_state({"draws": 3, "last": [1, 2]})
    j.close()
    j = Journal.for_account(StateDir(tmp_path).account("alpha"), PREFIX)
    assert j.load_state() == {"draws": 3, "last": [1, 2]}
    with pytest.raises(JournalError, match="JSON"):
        j.save_state({"bad": object()})
    j.close()


def test_only_one_worker_may_hold_an_account(journal: Journal, tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="another worker"):
        Journal.for_account(StateDir(tmp_path / "state").account("alpha"), PREFIX)
    # Readers that do not run the account can open it without the lock.
    reader = Journal(journal.path, PREFIX)
    assert reader.all_orders() == []
    reader.close()


def test_an_unusable_state_dir_is_a_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal.for_account(StateDir(blocker).account("alpha"), PREFIX)


@pytest.mark.parametrize(
    ("order_ref", "seq"),
    [
        (f"{PREFIX}12", 12),
        (f"{PREFIX}QWERTY-7", 7),  # an epoch: upper-case, never part of an account name
        (f"{PREFIX}beta-QWERTY-7", None),  # account alpha-beta's
        (f"{PREFIX}qwerty-7", None),
        (f"{PREFIX}QWERTY-", None),
        (f"{PREFIX}beta-3", None),  # account alpha-beta's, not ours
        (f"{PREFIX}", None),
        (f"{PREFIX}3x", None),
        (f"{PREFIX}\u00b2", None),  # str.isdigit() says yes, int() says no
        (f"{PREFIX}\u0663", None),  # a non-ASCII digit
        ("mr-alph-12", None),
        ("manual-1", None),
    ],
)
def test_only_our_prefix_followed_by_digits_is_ours(
    journal: Journal, order_ref: str, seq: int | None
) -> None:
    assert journal.seq_of(order_ref) == seq
    assert journal.owns(order_ref) is (seq is not None)


class BrokenDisk:
    """A connection whose every statement fails as on a full or failing disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, *args: object) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("disk I/O error")

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_failing_disk_is_a_one_line_journal_error(journal: Journal) -> None:
    intent = journal.new_intent("BTCUSD", "BUY", 1.0)
    assert journal.held() == []
    journal._db = BrokenDisk(journal._db)  # type: ignore[assignment]
    assert journal.held() == []  # the mirror answers (issue 27): no read reaches the disk
    assert journal.find(intent.order_ref) == intent
    for call in (
        lambda: journal.mark_acked(intent.order_ref, "1"),  # fails: the mirror is dropped
        journal.held,
        lambda: journal.find(intent.order_ref),
        lambda: journal.sent_since(0),
        journal.load_state,
        lambda: journal.new_intent("BTCUSD", "BUY", 1.0),
    ):
        with pytest.raises(JournalError, match="disk I/O error"):
            call()
