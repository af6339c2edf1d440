"""Trading hours: the window itself (pure), and a worker on a manual clock against the
simulator: no request and no order outside the window, a flatten within one tick of its end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from multirun.account import trading_hours
from multirun.account.ticker import Tick
from multirun.account.worker import OUTSIDE_HOURS, Worker
from multirun.config.specs import TradingHours, parse_days
from multirun.core.states import State
from multirun.sim import SimServer
from tests.account.test_worker import PREFIX, Harness
from tests.clocks import ManualClock


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


LONDON = TradingHours(parse_days("mon-fri"), 8 * 60, 16 * 60 + 30, "Europe/London")
NIGHT = TradingHours(parse_days("sun-thu"), 22 * 60, 6 * 60, "UTC", overnight=True)


@pytest.mark.parametrize(
    ("hours", "moment", "open_"),
    [
        (LONDON, "2026-12-07T07:59:59", False),  # Monday, winter: London is UTC
        (LONDON, "2026-12-07T08:00:00", True),
        (LONDON, "2026-12-07T16:30:00", False),  # closed at `to`
        (LONDON, "2026-07-07T07:30:00", True),  # summer: 08:30 in London
        (LONDON, "2026-12-05T12:00:00", False),  # Saturday
        (NIGHT, "2026-12-06T23:00:00", True),  # Sunday night
        (NIGHT, "2026-12-07T05:59:00", True),  # Monday morning: Sunday's window
        (NIGHT, "2026-12-05T23:00:00", False),  # Saturday night: no window opens
        (NIGHT, "2026-12-06T03:00:00", False),  # Sunday morning: Saturday's did not open
    ],
)
def test_the_window(hours: TradingHours, moment: str, open_: bool) -> None:
    assert trading_hours.is_open(hours, at(moment)) is open_


def test_when_it_closes_and_opens_next() -> None:
    friday = at("2026-12-04T15:00:00")
    assert trading_hours.closes_at(LONDON, friday) == at("2026-12-04T16:30:00")
    saturday = at("2026-12-05T10:00:00")
    assert trading_hours.closes_at(LONDON, saturday) is None
    assert trading_hours.opens_at(LONDON, saturday) == at("2026-12-07T08:00:00")


def requests(sim: SimServer) -> int:
    return sum(sim.stats()["requests"].values())


def ours(sim: SimServer) -> list[dict[str, Any]]:
    return [o for o in sim.ledger() if str(o["orderRef"]).startswith(PREFIX)]


def tick_at(worker: Worker, clock: ManualClock, moment: str) -> None:
    clock.advance(at(moment) - clock.now)
    worker.tick(Tick(clock.now, clock.now, worker.ticks + 1))
    assert worker.failures == 0, worker.last_error


def test_no_order_outside_the_window_and_a_flatten_at_its_end(
    sim: SimServer, tmp_path: Path
) -> None:
    harness = Harness(sim, tmp_path / "state")
    clock = ManualClock(start=at("2026-12-07T07:58:00"))
    hours = TradingHours(frozenset(range(7)), 8 * 60, 16 * 60 + 30, "UTC", flatten_at_end=True)
    worker = harness.worker(lambda ctx: "BUY", clock=clock, trading_hours=hours)
    try:
        worker.reconcile()
        before = requests(sim)
        tick_at(worker, clock, "2026-12-07T07:58:00")
        assert requests(sim) == before and ours(sim) == []  # not one request
        assert worker.state == State.PAUSED and worker.paused_reason() == OUTSIDE_HOURS
        assert worker.status()["paused_reason"] == OUTSIDE_HOURS
        tick_at(worker, clock, "2026-12-07T08:00:00")
        assert worker.state == State.RUNNING and len(ours(sim)) == 1
        tick_at(worker, clock, "2026-12-07T16:29:00")
        tick_at(worker, clock, "2026-12-07T16:30:00")  # the first tick after `to`: flat
        assert [o["status"] for o in ours(sim)] == ["CLOSED"] and worker.journal.held() == []
        assert worker.state == State.PAUSED and worker.paused is None  # the hours' pause only
        before = requests(sim)
        tick_at(worker, clock, "2026-12-07T16:31:00")
        tick_at(worker, clock, "2026-12-08T07:59:00")
        assert requests(sim) == before and len(ours(sim)) == 1
        tick_at(worker, clock, "2026-12-08T08:00:00")  # the next day's window
        assert worker.state == State.RUNNING and len(ours(sim)) == 2
    finally:
        harness.close(worker)
