"""The final report reuses the journal read made when a worker was gone (one read of
each journal per stop at 500 accounts), and reads again after anything wrote it."""

from __future__ import annotations

from pathlib import Path

from multirun.account.final_report import Leftover, journal_leftovers, unchanged
from multirun.account.journal.store import Journal
from multirun.supervisor.program import Proc, Program, Sweep
from multirun.supervisor.sweeps import Sweeps

PREFIX = "mr-alpha-"


def account(path: Path, reads: list[int]) -> Proc:
    def leftover() -> Leftover:
        reads.append(1)
        return journal_leftovers(path, PREFIX, "alpha", "close")

    program = Program("alpha", lambda context: 0, sweep=Sweep(lambda c: 0, leftover, 5.0))
    return Proc(program, lambda message, account=None: None)


def test_a_journal_read_stays_valid_until_written(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, PREFIX).close()
    left = journal_leftovers(path, PREFIX, "alpha", "close")
    assert unchanged(left) and not left.trades
    journal = Journal(path, PREFIX)
    journal.new_intent("BTCUSD", "BUY", 1)
    assert not unchanged(left)  # committed in the log
    journal.close()
    assert not unchanged(left)  # checkpointed and the log removed
    assert journal_leftovers(path, PREFIX, "alpha", "close").trades


def test_the_final_report_reuses_the_read_unless_the_journal_changed(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, PREFIX).close()
    reads: list[int] = []
    proc, sweeps = account(path, reads), Sweeps()
    assert sweeps.due([proc]) == []  # the worker is gone: read once, nothing to sweep
    assert len(reads) == 1
    assert not sweeps.final(proc).trades
    assert len(reads) == 1  # reused
    journal = Journal(path, PREFIX)  # e.g. `multirun close` or another tool wrote it
    journal.new_intent("BTCUSD", "BUY", 1)
    journal.close()
    assert sweeps.final(proc).trades
    assert len(reads) == 2


def test_a_restarted_account_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, PREFIX).close()
    reads: list[int] = []
    proc, sweeps = account(path, reads), Sweeps()
    sweeps.due([proc])
    proc.started += 1.0  # a new worker ran since
    sweeps.final(proc)
    assert len(reads) == 2
