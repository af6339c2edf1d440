"""Reconciler.await_listed's polls, with a fake server and a fake clock (no HTTP)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from multirun.account.journal.store import Journal, JournalOrder
from multirun.account.reconcile import Reconciler, Timing
from multirun.api.models import Trade, Transaction
from multirun.api.polls import LISTED_POLLS, OLD_LISTED_POLLS
from multirun.core.statedir import StateDir
from tests.conftest import FakeClock

WINDOW_S = 5.0  # the reconcile window: how long a fill may take to be listed


class Server:
    """opened_trades lists the trades in :attr:`open` once ``listed_on`` reads were made."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.open: list[Trade] = []
        self.listed_on: int | None = None  # the read from which the trades are listed
        self.reads: list[float] = []  # monotonic time of each opened_trades read

    def opened_trades(self, trade_id: str | int | None = None) -> list[Trade]:
        self.reads.append(self.clock.monotonic())
        listed = self.listed_on is not None and len(self.reads) >= self.listed_on
        return list(self.open) if listed else []

    def pending_trades(self) -> list[Trade]:
        return []

    def find_order(self, order_ref: str) -> Trade | None:
        raise AssertionError("not asked while awaiting a listing")

    def strategy_trades(self, order_ref: str | None = None, acdate: str = "") -> list[Transaction]:
        raise AssertionError("not asked while awaiting a listing")

    def close_trades(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = 10.0,
        order_ref: str | None = None,
    ) -> None:  # fmt: skip
        raise AssertionError("not asked while awaiting a listing")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 24, 8, 0, tzinfo=UTC))


@pytest.fixture
def journal(tmp_path: Path, clock: FakeClock) -> Iterator[Journal]:
    journal = Journal.for_account(StateDir(tmp_path).account("alpha"), "mr-alpha-", clock=clock)
    yield journal
    journal.close()


def acked(journal: Journal, server: Server) -> JournalOrder:
    """A market order just acknowledged as trade 7, which the server will list."""
    row = journal.new_intent("BTCUSD", "BUY", 1.0)
    journal.mark_acked(row.order_ref, "7")
    server.open = [Trade("7", row.order_ref, "BTCUSD", 1, 1.0, 100.0, "2026-11-24 08:00:00")]
    return journal.get(row.order_ref)


def reconciler(server: Server, journal: Journal, clock: FakeClock, **timing: object) -> Reconciler:
    return Reconciler(
        server, journal, stop=threading.Event(), started=clock.time(), clock=clock,
        timing=Timing(reconcile_window_s=WINDOW_S, **timing),  # type: ignore[arg-type]
    )  # fmt: skip


def await_fill(
    journal: Journal, clock: FakeClock, listed_on: int | None, **timing: object
) -> tuple[Server, JournalOrder]:
    """A market order just acknowledged, listed from the server's ``listed_on``-th read
    (None: never), awaited once."""
    server = Server(clock)
    row = acked(journal, server)
    server.listed_on = listed_on
    reconciler(server, journal, clock, **timing).await_listed([row.order_ref])
    return server, row


def test_a_fill_listed_at_once_costs_one_read_and_no_pause(
    journal: Journal, clock: FakeClock
) -> None:
    server, row = await_fill(journal, clock, 1)
    assert len(server.reads) == 1 and clock.sleeps == []
    assert journal.get(row.order_ref).listed_ts is not None


def test_polls_start_a_few_ms_after_the_ack_then_back_off(
    journal: Journal, clock: FakeClock
) -> None:
    _, row = await_fill(journal, clock, 6)
    assert clock.sleeps == list(itertools.islice(LISTED_POLLS.pauses(), 5))
    assert clock.sleeps[0] <= 0.005 and clock.sleeps == sorted(clock.sleeps)
    assert journal.get(row.order_ref).listed_ts is not None


def test_the_old_fixed_schedule_can_be_passed_in(journal: Journal, clock: FakeClock) -> None:
    await_fill(journal, clock, 3, listed_polls=OLD_LISTED_POLLS)
    assert clock.sleeps == [0.05, 0.05]


def test_a_fill_never_listed_is_awaited_for_the_window_within_the_budget(
    journal: Journal, clock: FakeClock
) -> None:
    start = clock.monotonic()
    server, row = await_fill(journal, clock, None)
    assert clock.monotonic() - start == pytest.approx(WINDOW_S)  # the same bound as before
    assert len(server.reads) <= LISTED_POLLS.budget(WINDOW_S)
    assert max(clock.sleeps) <= LISTED_POLLS.max_s
    assert journal.get(row.order_ref).listed_ts is None


def test_a_trade_already_seen_listed_is_not_awaited(journal: Journal, clock: FakeClock) -> None:
    server = Server(clock)
    row = acked(journal, server)
    rec = reconciler(server, journal, clock)
    rec.visible.add(row.order_ref)
    rec.await_listed([row.order_ref])
    assert server.reads == [] and clock.sleeps == []


# --- the delay learned per account ------------------------------------------------------


def confirm(rec: Reconciler, journal: Journal, server: Server, clock: FakeClock,
            listed_after_s: float) -> list[float]:  # fmt: skip
    """One acknowledged order the server lists ``listed_after_s`` after its ack; the
    times (after the ack) of the reads await_listed made."""
    server.reads, server.listed_on = [], None
    row = acked(journal, server)
    acked_at = clock.monotonic()
    listed_at = acked_at + listed_after_s

    def opened_trades(trade_id: str | int | None = None) -> list[Trade]:
        server.reads.append(clock.monotonic())
        return list(server.open) if clock.monotonic() >= listed_at - 1e-9 else []

    server.opened_trades = opened_trades  # type: ignore[method-assign]
    rec.await_listed([row.order_ref])
    assert journal.get(row.order_ref).listed_ts is not None
    journal.mark_closed([row.order_ref])
    return [t - acked_at for t in server.reads]


def test_after_two_fills_the_first_read_comes_when_fills_were_listed(
    journal: Journal, clock: FakeClock
) -> None:
    server = Server(clock)
    rec = reconciler(server, journal, clock)
    assert confirm(rec, journal, server, clock, 0.02)[0] == 0.0  # nothing learned: at once
    confirm(rec, journal, server, clock, 0.02)
    reads = confirm(rec, journal, server, clock, 0.02)
    assert len(reads) == 1 and reads[0] >= 0.02  # one read, not made before the fill
    for _ in range(10):
        assert len(confirm(rec, journal, server, clock, 0.02)) <= 2
    # a slower server: found by the back-off, then learned
    slow = [len(confirm(rec, journal, server, clock, 0.1)) for _ in range(12)]
    assert slow[0] <= LISTED_POLLS.budget(0.1) and slow[-1] <= 2


def test_the_learned_first_read_runs_from_the_ack_not_from_the_call(
    journal: Journal, clock: FakeClock
) -> None:
    server = Server(clock)
    rec = reconciler(server, journal, clock)
    for _ in range(4):
        confirm(rec, journal, server, clock, 0.02)
    row = acked(journal, server)
    server.reads, server.listed_on = [], 1
    clock.advance(0.5)  # the caller came late (a slow journal write): read at once
    sleeps = len(clock.sleeps)
    rec.await_listed([row.order_ref])
    assert len(clock.sleeps) == sleeps  # no pause
    assert server.reads == [clock.monotonic()]


def test_a_fixed_schedule_does_not_learn(journal: Journal, clock: FakeClock) -> None:
    server = Server(clock)
    rec = reconciler(server, journal, clock, listed_polls=OLD_LISTED_POLLS, learn=False)
    for _ in range(4):
        reads = confirm(rec, journal, server, clock, 0.02)
    assert reads == [0.0, pytest.approx(0.05)]


def test_on_foreign_hears_only_refs_the_journal_never_held_once_reconciled(
    journal: Journal, clock: FakeClock
) -> None:
    server, heard = Server(clock), []
    server.listed_on = 1
    foreign = Reconciler(
        server, journal, stop=threading.Event(), started=clock.time(), clock=clock,
        timing=Timing(reconcile_window_s=WINDOW_S), on_foreign=heard.append,
    )  # fmt: skip
    first, later = "mr-alpha-OTHERS-1", "mr-alpha-OTHERS-2"
    server.open = [Trade("1", first, "BTCUSD", 1, 1.0, 100.0, "2026-11-24 08:00:00")]
    foreign.sync()  # reconciling on start: a lost journal's trade, expected
    assert foreign.adopted_on_start == [first] and heard == []
    foreign.reconciled = True
    server.open.append(Trade("2", later, "BTCUSD", 1, 1.0, 100.0, "2026-11-24 08:00:00"))
    foreign.sync()
    journal.mark_closed([later])
    foreign.sync()  # listed again: the journal held it before
    assert heard == [later] and foreign.adopted_on_start == [first]
