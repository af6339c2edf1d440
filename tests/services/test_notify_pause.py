"""The notifier's PAUSED alerts (issue 24): risk_breach for an account's own limit, paused
for an operator, nothing for the trading hours, resumed when RUNNING again, and the
file-level limit's breach told once for the fleet (its accounts not one by one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.services.notify.events import Watcher


def write(layout: StateDir, accounts: dict[str, Any], risk: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {"accounts": accounts}
    if risk is not None:
        data["risk"] = risk
    procutil.write_json_atomic(layout.supervisor_json, data)


def said(state: str, reason: str | None = None, pid: int = 7) -> dict[str, Any]:
    """A running account whose worker said ``state`` (and why) on its pipe."""
    return {"state": "RUNNING", "pid": pid, "worker_state": state, "worker_reason": reason}


def kinds(watcher: Watcher) -> list[tuple[str, str | None, str]]:
    return [(e.kind, e.account, e.text) for e in watcher.poll()]


def test_pauses_are_told_by_their_cause_and_resumed_once(tmp_path: Path) -> None:
    layout = StateDir(tmp_path)
    watcher = Watcher(layout, ["a", "b", "c"], clock=lambda: 1_796_644_800.0)
    write(layout, {n: said("RUNNING") for n in "abc"})
    assert kinds(watcher) == []
    write(layout, {
        "a": said("PAUSED", "daily loss 312.40 > 300"),
        "b": said("PAUSED", "paused by operator"),
        "c": said("PAUSED", "outside trading hours"),
    })  # fmt: skip
    assert kinds(watcher) == [
        ("risk_breach", "a", "a: PAUSED: daily loss 312.40 > 300; nothing opens until resumed"),
        ("paused", "b", "b: PAUSED: paused by operator; nothing opens until resumed"),
    ]
    assert kinds(watcher) == []  # told once
    write(layout, {
        "a": said("PAUSED", "daily loss 312.40 > 300"),
        "b": said("PAUSED", "flattened by operator at 10:00:00 UTC"),  # another reason: told
        "c": said("RUNNING"),  # the window opened: the plan, not news
    })  # fmt: skip
    assert [k[:2] for k in kinds(watcher)] == [("paused", "b")]
    write(layout, {n: said("RUNNING") for n in "abc"})
    assert [k[:2] for k in kinds(watcher)] == [("resumed", "a"), ("resumed", "b")]


def test_the_fleet_breach_is_told_once_for_all_accounts(tmp_path: Path) -> None:
    layout = StateDir(tmp_path)
    watcher = Watcher(layout, ["a", "b"], clock=lambda: 1_796_644_800.0)
    reason = "fleet daily loss 105.50 > 100 (day 2026-12-07)"
    risk = {"breach": reason, "on_breach": "flatten", "day_pnl": -105.5}
    write(layout, {n: said("PAUSED", reason) for n in "ab"}, risk)
    events = watcher.poll()
    assert [(e.kind, e.account) for e in events] == [("risk_breach", None)]
    assert events[0].text == f"all accounts: {reason}: flatten sent to every account"
    assert events[0].data["day_pnl"] == -105.5
    assert watcher.poll() == []
    write(layout, {n: said("PAUSED", reason) for n in "ab"}, {**risk, "breach": None})
    assert watcher.poll() == []
