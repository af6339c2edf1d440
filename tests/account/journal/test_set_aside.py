"""A damaged journal (issue 23, case 10): its lock's holder sets it aside, kept and
renamed, and opens a new one that says it was rebuilt; readers only report the damage."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from multirun.account.journal import set_aside
from multirun.account.journal.schema import CorruptJournal
from multirun.account.journal.store import Journal
from multirun.core.statedir import AccountDir, StateDir

PREFIX = "mr-alpha-"


@pytest.fixture
def account(tmp_path: Path) -> AccountDir:
    return StateDir(tmp_path / "state").account("alpha")


def held_journal(account: AccountDir, rows: int = 300) -> str:
    """A journal holding one OPEN trade and enough equity rows to fill pages; its ref."""
    journal = Journal(account.journal, PREFIX)
    try:
        ref = journal.new_intent("BTCUSD", "BUY", 1.0).order_ref
        journal.mark_acked(ref, "7")
        for n in range(rows):
            journal.add_equity(float(n), 1000.0, 0.0, 0.0)
    finally:
        journal.close()  # checkpointed: the rows are in journal.sqlite itself
    return ref


def truncate_to_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def kept(account: AccountDir) -> list[Path]:
    return sorted(account.path.glob("journal.corrupt-*.sqlite*"))


def test_a_truncated_journal_is_set_aside_and_a_new_one_says_so(account: AccountDir) -> None:
    held_journal(account)
    truncate_to_half(account.journal)
    damaged = account.journal.read_bytes()
    journal = Journal.for_account(account, PREFIX)
    try:
        assert journal.held() == [] and journal.is_new
        rebuilt = journal.rebuilt
        assert rebuilt is not None and rebuilt.reason == "database disk image is malformed"
    finally:
        journal.close()
    (aside,) = kept(account)
    assert aside.read_bytes() == damaged  # kept whole, never deleted
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert rebuilt.kept_as == str(aside) and str(aside) in rebuilt.line()
    again = Journal.for_account(account, PREFIX)  # the note stays with the new journal
    try:
        assert again.rebuilt == rebuilt and not again.is_new
    finally:
        again.close()
    assert "journal rebuilt from the server" in (set_aside.examine(account.journal, "a") or "")


def test_garbage_is_set_aside_as_not_a_database(account: AccountDir) -> None:
    account.path.mkdir(parents=True)
    account.journal.write_bytes(b"garbage " * 512)
    journal = Journal.for_account(account, PREFIX)
    try:
        assert journal.rebuilt is not None and journal.rebuilt.reason == "file is not a database"
    finally:
        journal.close()
    (aside,) = kept(account)
    assert aside.read_bytes() == b"garbage " * 512


def test_a_reader_without_the_lock_sets_nothing_aside(account: AccountDir) -> None:
    held_journal(account)
    truncate_to_half(account.journal)
    with pytest.raises(CorruptJournal, match="malformed"):
        Journal(account.journal, PREFIX)
    assert kept(account) == []
    note = set_aside.examine(account.journal, "alpha")
    assert note is not None and "is damaged" in note and "multirun close alpha" in note


def test_a_whole_journal_is_kept_and_checked_in_a_few_milliseconds(account: AccountDir) -> None:
    ref = held_journal(account, rows=3000)
    began = time.perf_counter()
    journal = Journal.for_account(account, PREFIX)
    took = time.perf_counter() - began
    try:
        assert [r.order_ref for r in journal.held()] == [ref] and journal.rebuilt is None
    finally:
        journal.close()
    assert kept(account) == [] and set_aside.examine(account.journal, "alpha") is None
    assert took < 0.5  # measured: about 1 ms (quick_check included)
