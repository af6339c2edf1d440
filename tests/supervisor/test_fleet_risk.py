"""The fleet limit: sums of what the workers say on their pipes against the file's risk:."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest

from multirun.config.specs import DayStart, RiskSpec
from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.core.statefiles import money_line, read_condition, read_money
from multirun.services.notify.events import Watcher
from multirun.supervisor.arbiter import Arbiter
from multirun.supervisor.control_server import NoAnswer, StatusReplies
from multirun.supervisor.fleet_risk import FleetRisk
from multirun.supervisor.live_entries import Entries
from multirun.supervisor.output import LogRouter
from multirun.supervisor.program import Program

MONDAY_NOON = 1_796_644_800.0  # 2026-12-07 12:00:00 UTC


class Clock:
    def __init__(self, now: float = MONDAY_NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_two_accounts_breach_the_daily_loss_together_that_neither_breaches_alone() -> None:
    fleet = FleetRisk(RiskSpec(max_daily_loss=100.0, on_breach="flatten"), clock=Clock())
    fleet.heard("a", -60.0, 10_000.0)
    assert fleet.check() is None  # a alone: 60
    fleet.heard("b", -30.0, 10_000.0)
    assert fleet.check() is None  # 90
    fleet.heard("b", -45.5, 10_000.0)
    breach = fleet.check()
    assert breach is not None
    assert (breach.kind, breach.cmd, breach.total, breach.limit) == (
        "max_daily_loss", "flatten", 105.5, 100.0,
    )  # fmt: skip
    assert breach.reason == "fleet daily loss 105.50 > 100 (day 2026-12-07)"
    assert (
        breach.line()
        == "risk: fleet daily loss 105.50 > 100 (day 2026-12-07): flatten every account"
    )
    fleet.heard("a", -90.0, 10_000.0)
    assert fleet.check() is None  # latched: sent once
    assert fleet.to_dict()["breach"] == breach.reason


def test_the_drawdown_is_the_summed_equity_below_its_peak_and_a_resume_takes_it_again() -> None:
    fleet = FleetRisk(RiskSpec(max_drawdown=300.0), clock=Clock())
    fleet.heard("a", 0.0, 5_000.0)
    fleet.heard("b", 0.0, 5_000.0)
    fleet.check()
    fleet.heard("a", 0.0, 5_400.0)  # peak 10,400
    assert fleet.check() is None
    fleet.heard("a", 0.0, 5_150.0)
    fleet.heard("b", 0.0, 4_900.0)  # 10,050: 350 below the peak
    breach = fleet.check()
    assert breach is not None and breach.kind == "max_drawdown" and breach.total == 350.0
    assert breach.cmd == "pause" and "peak 10,400.00" in breach.reason
    fleet.resumed()
    assert fleet.check() is None  # the peak is now 10,050
    fleet.heard("b", 0.0, 4_500.0)
    assert fleet.check() is not None


def test_an_account_joining_the_sum_is_no_drawdown() -> None:
    fleet = FleetRisk(RiskSpec(max_drawdown=100.0), clock=Clock())
    fleet.heard("a", 0.0, 5_000.0)
    fleet.heard("b", 0.0, None)  # no equity yet: not in the sum
    fleet.check()
    fleet.heard("b", 0.0, 3_000.0)
    assert fleet.check() is None
    fleet.heard("a", 0.0, 4_950.0)
    assert fleet.check() is None  # 50 below 8,000


def test_after_a_resume_the_days_loss_counts_from_there_and_a_new_day_from_zero() -> None:
    clock = Clock()
    fleet = FleetRisk(RiskSpec(max_daily_loss=100.0), clock=clock)
    fleet.heard("a", -150.0, None)
    first = fleet.check()
    assert first is not None
    fleet.resumed()
    fleet.heard("a", -200.0, None)
    assert fleet.check() is None  # 50 more since the resume
    fleet.heard("a", -251.0, None)
    assert fleet.check() is not None  # 101 since the resume
    paused = [("a", first.reason), ("b", "paused by operator"), ("c", None)]
    assert fleet.stale_day_pauses(paused) == []
    clock.now += 86_400
    assert fleet.day_pnl() is None  # yesterday's word counts nothing today
    assert fleet.stale_day_pauses(paused) == ["a"]


def test_the_trading_day_starts_at_day_starts_in_its_zone() -> None:
    new_york_5pm = DayStart(17 * 60, "America/New_York")
    assert new_york_5pm.day_of(MONDAY_NOON).isoformat() == "2026-12-06"  # 07:00 there
    assert new_york_5pm.day_of(MONDAY_NOON + 10 * 3600).isoformat() == "2026-12-07"  # 17:00 there
    assert DayStart().day_of(MONDAY_NOON).isoformat() == "2026-12-07"


def test_no_limits_no_breach_and_new_limits_apply_afresh() -> None:
    fleet = FleetRisk(None, clock=Clock())
    fleet.heard("a", -1e9, 1.0)
    assert fleet.check() is None
    fleet.adopt(RiskSpec(max_daily_loss=10.0))
    assert fleet.check() is not None


def test_money_lines_round_trip_and_are_no_condition() -> None:
    line = money_line(-12.3456, None)
    assert read_money(line) == (-12.35, None)
    assert read_condition(line) is None
    assert read_money('{"state": "PAUSED", "reason": "x"}') is None
    assert read_money('{"day_pnl": true, "equity": 1}') is None
    assert read_money("up") is None


def test_the_sums_kept_line_by_line_are_the_sums_of_every_account() -> None:
    """Kept as each line comes (not summed over every account at each line): the same
    sums, accounts that stop reporting equity and a new trading day included."""
    clock = Clock()
    fleet = FleetRisk(RiskSpec(max_daily_loss=1e9, day_starts=DayStart()), clock=clock)
    rng = random.Random(5)
    for step in range(3000):
        if step == 2000:
            clock.now += 86_400.0  # the next day: yesterday's words count nothing today
        name = f"acct-{rng.randrange(40)}"
        equity = None if rng.random() < 0.1 else rng.uniform(9e5, 1.1e6)
        fleet.heard(name, rng.uniform(-500.0, 500.0), equity)
        fleet.check()
        today = fleet.today()
        days = [r.day_pnl for r in fleet.readings.values() if r.day == today]
        equities = {n: r.equity for n, r in fleet.readings.items() if r.equity is not None}
        assert fleet.day_pnl() == (pytest.approx(sum(days), abs=0.011) if days else None)
        total, members = fleet.equity()
        assert members == set(equities)
        assert total == pytest.approx(sum(equities.values()), abs=0.011)


def test_a_kept_status_reply_gets_the_sums_each_p_and_l_line_moved(tmp_path: Path) -> None:
    """P&L lines move the file-level sums with no save: an "unchanged" reply carries them,
    so the dashboard's and the notifier's kept copy never shows an old day's P&L."""
    router = LogRouter.for_accounts(["a"], tmp_path, [], stream=io.StringIO())
    arb = Arbiter([Program("a", lambda context: 0)], state_dir=tmp_path, router=router,
                  stop_timeout_s=5, risk=RiskSpec(max_daily_loss=1_000.0))  # fmt: skip
    replies = StatusReplies(lambda request: arb.handle(None, request) or {})  # type: ignore[arg-type]
    arb.heard(arb.procs[0], money_line(-10.0, 5_000.0))
    assert replies()["risk"]["day_pnl"] == -10.0  # the whole reply
    generation = replies.kept and replies.kept["generation"]
    arb.heard(arb.procs[0], money_line(-25.5, 4_984.5))
    kept = replies()
    assert kept["generation"] == generation  # nothing saved: "unchanged" was the answer
    assert kept["risk"]["day_pnl"] == -25.5 and kept["risk"]["equity"] == 4_984.5
    assert kept["accounts"]["a"]["state"] == arb.procs[0].state
    router.close()


def test_the_notifier_tells_the_fleet_breach_from_the_reply_once(tmp_path: Path) -> None:
    """The ``risk_breach`` of the file-level limit comes with the entries, from the
    supervisor's reply (no second read of ``supervisor.json``; right on a full disk: the
    watcher's own state dir holds no file here), and from the file when nothing answers."""
    router = LogRouter.for_accounts(["a"], tmp_path, [], stream=io.StringIO())
    arb = Arbiter([Program("a", lambda context: 0)], state_dir=tmp_path, router=router,
                  stop_timeout_s=5, risk=RiskSpec(max_daily_loss=100.0))  # fmt: skip
    answering = [True]

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        if not answering[0]:
            raise NoAnswer("refused")
        return arb.handle(None, request) or {}  # type: ignore[arg-type]

    empty = StateDir(tmp_path / "elsewhere")
    entries = Entries(empty, ask=ask)
    watcher = Watcher(empty, ["a"], processes=entries, risk=entries.risk)
    assert watcher.poll() == []
    arb.heard(arb.procs[0], money_line(-150.0, 5_000.0))
    told = watcher.poll()
    assert [(e.kind, e.account) for e in told] == [("risk_breach", None)], told
    assert told[0].data["day_pnl"] == -150.0
    assert watcher.poll() == []  # once
    answering[0] = False
    assert entries() == {} and entries.risk() == {}  # the file (none here) when no answer
    procutil.write_json_atomic(empty.supervisor_json, arb.status_data())
    assert entries()["a"]["state"] == arb.procs[0].state
    assert entries.risk()["breach"] == told[0].data["reason"]
    router.close()
