"""Money limits inside one account, on the simulator, the ledger as judge: pause, resume
and flatten (journaled: a new worker on the journal starts paused), and a losing account
breaching its own max_daily_loss (pause or flatten)."""

from __future__ import annotations

import signal
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from multirun.account.risk import Money, MoneyWatch
from multirun.account.worker import Worker
from multirun.config.specs import DayStart, RiskSpec
from multirun.core.errors import JournalError
from multirun.core.states import State
from multirun.sim import SimServer
from multirun.strategies import Signal
from multirun.strategies.context import Decision, StrategyContext
from tests.account.journal.test_store import BrokenDisk
from tests.account.test_process import bench
from tests.account.test_worker import PREFIX, Harness, Script, open_ours, tick
from tests.conftest import SimCaller, wait_until

BTC = 30000.0  # where each test pins BTCUSD first
MOVE = 100.0  # the price's fall per tick in a losing run (volume 1: 100 USD per tick)


def ours(where: Harness | SimServer, prefix: str = PREFIX) -> list[dict[str, Any]]:
    """Our orders as the simulator's ledger records them, in the order received."""
    sim = where.sim if isinstance(where, Harness) else where
    return [o for o in sim.ledger() if str(o["orderRef"]).startswith(prefix)]


SPREAD = 36.0  # the simulator's BTCUSD spread: each round trip loses it


def churn(ctx: StrategyContext) -> Decision:
    """A losing strategy in a falling market: long, closed and opened again every tick."""
    return Decision(Signal.BUY, fresh=True)


def hold(ctx: StrategyContext) -> str:
    """Long and staying long (a drawdown grows with the fall)."""
    return "BUY"


def losing_run(harness: Harness, worker: Worker, ticks: int) -> tuple[int, int, float]:
    """Tick ``worker`` while BTCUSD falls MOVE a tick; (the tick of the breach, our orders
    then, the unrealized loss of what was held at the breach)."""
    worker.reconcile()
    breach, orders, open_loss = -1, 0, 0.0
    for n in range(ticks):
        harness.sim.set_price("BTCUSD", BTC - n * MOVE)
        tick(worker)
        assert worker.failures == 0, worker.last_error
        if breach < 0 and worker.state == State.PAUSED:
            breach, orders = n, len(ours(harness))
            held = [r.order_ref for r in worker.journal.held()]
            open_loss = -sum(worker.pricing.unrealized.get(ref, 0.0) for ref in held)
    return breach, orders, open_loss


def loss_at_rest(harness: Harness) -> float:
    """What our trades lost, all closed, by the simulator's own figures."""
    orders = ours(harness)
    assert orders and {o["status"] for o in orders} == {"CLOSED"}
    return -sum(float(o["realized_pl"]) for o in orders)


@pytest.mark.parametrize("on_breach", ["pause", "flatten"])
def test_a_losing_account_stops_opening_at_its_daily_loss(
    harness: Harness, alice: SimCaller, on_breach: str
) -> None:
    limit = 300.0
    worker = harness.worker(churn, risk=RiskSpec(max_daily_loss=limit, on_breach=on_breach))
    breach, orders, open_loss = losing_run(harness, worker, 6)
    assert breach > 0, "no breach"
    reason = worker.paused_reason() or ""
    assert reason.startswith("daily loss ") and reason.endswith(" > 300"), reason
    assert worker.paused is not None and worker.paused.until is not None  # lifts tomorrow
    assert len(ours(harness)) == orders  # nothing opened after the breach
    if on_breach == "flatten":
        assert open_ours(alice) == {} and open_loss == 0.0  # closed at the breach
    assert open_ours(alice) == {}  # pause: the strategy's own close acted on the next tick
    loss = loss_at_rest(harness)
    # Over the limit by at most: the crossing tick's own step, what was held then, and
    # one more tick's move for what a pause left open until the strategy closed it.
    assert limit < loss <= limit + (MOVE + SPREAD) + open_loss + MOVE + SPREAD, loss
    assert worker.status()["day_pnl"] == pytest.approx(-loss, abs=0.05)


def test_a_drawdown_from_the_peak_pauses(harness: Harness, alice: SimCaller) -> None:
    worker = harness.worker(hold, risk=RiskSpec(max_drawdown=250.0))
    breach, orders, open_loss = losing_run(harness, worker, 5)
    assert breach > 0 and orders == 1 and len(open_ours(alice)) == 1  # held: pause closes nothing
    assert (worker.paused_reason() or "").startswith("drawdown ")
    assert worker.paused is not None and worker.paused.until is None  # only resume lifts it
    assert 250.0 < open_loss <= 250.0 + MOVE + SPREAD


def test_a_daily_loss_pause_lifts_at_the_next_day(harness: Harness) -> None:
    worker = harness.worker(Script("BUY"))
    worker.reconcile()
    worker.pause("daily loss 312.40 > 300", until=time.time() - 1)  # yesterday's
    assert worker.state == State.PAUSED
    tick(worker)
    assert worker.state == State.RUNNING and worker.journal.pause() is None
    assert len(ours(harness)) == 1


def told(worker: Worker) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []
    worker.on_condition = lambda state, reason: seen.append((state, reason))
    return seen


def test_pause_stops_opens_not_closes_and_a_new_worker_starts_paused(
    harness: Harness, alice: SimCaller
) -> None:
    worker = harness.worker(Script("BUY", "SELL", "SELL", "BUY"))
    conditions = told(worker)
    worker.reconcile()
    tick(worker)
    assert len(ours(harness)) == 1
    worker.pause("paused by operator")
    assert worker.state == State.PAUSED and conditions == [(State.PAUSED, "paused by operator")]
    assert worker.status()["paused_reason"] == "paused by operator"
    tick(worker)  # SELL while long: the close acts, the open does not
    assert open_ours(alice) == {} and len(ours(harness)) == 1
    assert worker.failures == 0 and worker.last_error is None
    harness.close(worker)  # as a SIGKILL would: no on_stop
    again = harness.worker(Script("BUY", "BUY"))
    assert again.state == State.PAUSED and again.paused_reason() == "paused by operator"
    again.reconcile()
    tick(again)
    assert len(ours(harness)) == 1  # still nothing opened
    again.resume()
    assert again.state == State.RUNNING and again.journal.pause() is None
    tick(again)
    assert len(ours(harness)) == 2 and len(open_ours(alice)) == 1


def test_flatten_closes_everything_once_then_pauses(harness: Harness, alice: SimCaller) -> None:
    for n in (77, 78):  # ours, from a lost journal: adopted
        alice.wait_open(alice.open(buysell="BUY", orderRef=f"{PREFIX}{n}"))
    worker = harness.worker(Script("BUY", "BUY", "SELL"))
    worker.reconcile()
    tick(worker)  # long already: nothing sent
    assert len(open_ours(alice)) == 2
    closes = harness.sim.stats()["requests"].get("close_orders", 0)
    worker.flatten("flattened by operator")
    assert open_ours(alice) == {} and worker.journal.held() == []
    assert harness.sim.stats()["requests"].get("close_orders", 0) == closes + 1  # one request
    assert {o["status"] for o in ours(harness)} == {"CLOSED"}
    assert worker.state == State.PAUSED and worker.paused is not None
    assert not worker.paused.flatten  # done: a restart has nothing left to close
    tick(worker)
    tick(worker)
    assert len(ours(harness)) == 2 and open_ours(alice) == {}


@pytest.fixture
def alice(sim: Any) -> SimCaller:
    return SimCaller(sim, user="alice", api_key="alice-key", accountid="ACC-1").login()


@pytest.fixture
def harness(sim: Any, tmp_path: Any) -> Any:
    h = Harness(sim, tmp_path / "state")
    yield h
    for worker in list(h.workers):
        h.close(worker)


@pytest.mark.process
def test_a_breach_survives_a_sigkilled_worker(sim: SimServer, tmp_path: Path) -> None:
    """A real ``run-account`` breaches a tiny max_daily_loss (the spread of its first trade
    is enough), is SIGKILLed, and its restart is PAUSED from its first status on, opening
    nothing."""
    config = bench.write_config(tmp_path)
    text = config.read_text().replace(
        "    on_stop: close\n", "    on_stop: close\n    risk: {max_daily_loss: 0.01}\n"
    )
    config.write_text(text)
    log = tmp_path / "worker.log"
    proc = bench.start_worker(config, sim.base_url, log)
    try:
        paused = wait_until(lambda: breached(tmp_path, proc.pid), timeout=30)
        proc.kill()
        proc.wait(timeout=10)
        orders = len(ours(sim, bench.PREFIX))
        assert orders >= 1
        restarted = bench.start_worker(config, sim.base_url, log)
        try:
            first = wait_until(lambda: status_of(tmp_path, restarted.pid), timeout=20)
            assert first["state"] == "PAUSED" and first["paused_reason"] == paused
            wait_until(lambda: status_of(tmp_path, restarted.pid).get("ticks", 0) >= 2, 20)
            assert len(ours(sim, bench.PREFIX)) == orders  # ticking, paused: nothing opened
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(timeout=30) == 0
        finally:
            restarted.kill()
    finally:
        proc.kill()
    assert {o["status"] for o in ours(sim, bench.PREFIX)} == {"CLOSED"}  # on_stop close


def status_of(workdir: Path, pid: int) -> dict[str, Any]:
    """The worker ``pid``'s status.json ({} while another process wrote the last one)."""
    status = bench.status(workdir)
    return status if status.get("pid") == pid else {}


def breached(workdir: Path, pid: int) -> str | None:
    reason = status_of(workdir, pid).get("paused_reason")
    return reason if isinstance(reason, str) and reason.startswith("daily loss") else None


def test_money_watch_sums_days_equity_and_resumes() -> None:
    asked: list[float] = []

    def realized_since(ts: float) -> float:
        asked.append(ts)
        return -10.0 if len(asked) == 1 else 0.0  # today's closes, then the next day's

    noon = 1_796_644_800.0  # 2026-12-07 12:00 UTC
    watch = MoneyWatch(
        RiskSpec(max_daily_loss=100, max_drawdown=80), DayStart(), realized_since, noon
    )
    assert asked == [noon - 12 * 3600]  # one read: the day's start
    money = watch.observe(noon, unrealized=-30.0, nav=None, sampled_at=None)
    assert money == Money(-40.0, None, 0.0) and watch.breach(money) is None
    money = watch.observe(noon + 1, unrealized=10.0, nav=1000.0, sampled_at=noon + 1)
    assert money == Money(0.0, 1000.0, 0.0)  # anchored on the NAV: the peak with it
    watch.realized(-60.0)  # a close priced: no journal read
    money = watch.observe(noon + 2, unrealized=-10.0, nav=1000.0, sampled_at=noon + 1)
    assert money == Money(-80.0, 920.0, 80.0) and watch.breach(money) is None
    money = watch.observe(noon + 3, unrealized=-60.0, nav=None, sampled_at=None)
    assert watch.breach(money) == "daily loss 130.00 > 100"
    watch.resumed()  # the loss counts from -130 now, the drawdown from the next peak
    money = watch.observe(noon + 4, unrealized=-60.0, nav=None, sampled_at=None)
    assert money.drawdown == 0.0 and watch.breach(money) is None
    money = watch.observe(noon + 5, unrealized=-150.0, nav=None, sampled_at=None)
    assert watch.breach(money) == "drawdown 90.00 > 80"
    money = watch.observe(noon + 6, unrealized=-180.0, nav=None, sampled_at=None)
    assert watch.breach(money) == "daily loss 120.00 > 100 since the resume"
    tomorrow = watch.observe(noon + 12 * 3600, unrealized=0.0, nav=None, sampled_at=None)
    assert len(asked) == 2 and tomorrow.day_pnl == 0.0 and watch.loss_base == 0.0


def test_an_unreadable_journaled_pause_is_still_a_pause(harness: Harness) -> None:
    worker = harness.worker(Script("BUY"))
    worker.journal.record_pause("{not json")
    harness.close(worker)
    again = harness.worker(Script("BUY"))
    assert again.state == State.PAUSED and "cannot be read" in (again.paused_reason() or "")
    again.reconcile()
    tick(again)
    assert ours(harness) == []


def test_a_pause_holds_when_the_journal_cannot_record_it(harness: Harness) -> None:
    worker = harness.worker(Script("BUY"))
    conditions = told(worker)
    good = worker.journal._db
    worker.journal._db = BrokenDisk(good)  # type: ignore[assignment]
    with pytest.raises(JournalError, match="disk I/O error"):
        worker.pause("paused by operator")
    worker.journal._db = good  # type: ignore[assignment]
    assert worker.state == State.PAUSED and conditions == [(State.PAUSED, "paused by operator")]
    assert worker.journal.pause() is None  # not durable: said by the raise


class FullDisk:
    """A connection on a full disk: reads work, every write fails."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if not sql.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.mark.slow  # the closer retries the journal's rows until its deadline (0.4 s here)
def test_a_flatten_closes_even_when_the_journal_cannot_record_it(
    harness: Harness, alice: SimCaller
) -> None:
    worker = harness.worker(Script("BUY"))
    worker.runner = replace(worker.runner, stop_timeout_s=0.5)  # the flatten's budget
    worker.reconcile()
    tick(worker)
    assert len(open_ours(alice)) == 1
    good = worker.journal._db
    worker.journal._db = FullDisk(good)  # type: ignore[assignment]
    with pytest.raises(JournalError, match="disk is full"):
        worker.flatten("flattened by operator")
    worker.journal._db = good  # type: ignore[assignment]
    assert open_ours(alice) == {} and worker.state == State.PAUSED


def test_a_resume_counts_after_a_restart_the_same_day(harness: Harness) -> None:
    limits = RiskSpec(max_daily_loss=100)
    worker = harness.worker(Script(), risk=limits)
    worker.money.last = Money(-150.0, None, 0.0)  # a day's loss beyond the limit
    worker.pause("daily loss 150.00 > 100")
    worker.resume()
    harness.close(worker)
    again = harness.worker(Script(), risk=limits)
    assert again.state == State.RUNNING and again.money.loss_base == -150.0
    assert again.money.breach(Money(-200.0, None, 0.0)) is None  # 50 since the resume
