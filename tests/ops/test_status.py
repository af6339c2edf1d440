"""status: merging the supervisor's and the workers' files, and both renderings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from multirun.account.journal.store import Journal
from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.ops.status import (
    ORPHANED,
    AccountStatus,
    Snapshot,
    collect,
    format_duration,
    merge,
    render_json,
    render_text,
)
from tests.supervisor.test_arbiter import runner_for

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
SUP = {"state": "RUNNING", "pid": 42, "started_utc": "2026-01-02T03:00:00+00:00", "restarts": 2}
WORKER = {
    "pid": 42, "state": "HALTED", "last_tick_utc": "2026-01-02T03:04:00+00:00",
    "next_tick_utc": "2026-01-02T03:04:10+00:00", "open_trades": 1, "ticks": 7,
    "token_expires_utc": "2026-01-02T04:00:00+00:00", "last_error": "ServerError: 503",
    "halted_reason": "5 failed ticks in a row",
}  # fmt: skip


def test_a_halted_worker_overrides_running() -> None:
    row = merge("a", SUP, WORKER, running=True, now=NOW)
    assert (row.state, row.pid, row.restarts, row.uptime_s) == ("HALTED", 42, 2, 245.0)
    assert row.open_trades == 1 and row.next_tick_utc == WORKER["next_tick_utc"]


def test_a_worker_halted_within_its_first_seconds_shows_halted_not_starting() -> None:
    row = merge("a", {**SUP, "state": "STARTING"}, WORKER, running=True, now=NOW)
    assert row.state == "HALTED" and row.halted_reason == WORKER["halted_reason"]


def test_a_status_file_of_another_process_does_not_override() -> None:
    row = merge("a", SUP, {**WORKER, "pid": 41}, running=True, now=NOW)
    assert row.state == "RUNNING"


def test_without_a_supervisor_everything_is_stopped_but_fatal() -> None:
    row = merge("a", SUP, WORKER, running=False, now=NOW)
    assert (row.state, row.pid, row.uptime_s, row.next_tick_utc) == ("STOPPED", None, None, None)
    assert row.last_tick_utc == WORKER["last_tick_utc"] and row.restarts == 2
    fatal = merge("b", {**SUP, "state": "FATAL"}, {}, running=False, now=NOW)
    assert fatal.state == "FATAL"
    assert merge("c", None, {}, running=False, now=NOW).state == "STOPPED"


def test_collect_after_a_stop_keeps_the_last_known_details(tmp_path: Path) -> None:
    runner = runner_for(tmp_path, "a", "b")
    data = {"pid": 1, "accounts": {"a": {**SUP, "state": "STOPPED", "last_exit": "exit 0"}}}
    layout = StateDir(tmp_path)
    procutil.write_json_atomic(layout.supervisor_json, data)
    procutil.write_json_atomic(layout.account("a").status, WORKER)
    snapshot = collect(runner, now=NOW)
    assert not snapshot.running
    a, b = snapshot.accounts
    assert (a.state, a.ticks, a.last_error, a.note) == ("STOPPED", 7, "ServerError: 503", None)
    assert (b.state, b.note) == ("STOPPED", "not started")


def test_text_and_json_renderings() -> None:
    rows = [
        merge("alpha", SUP, WORKER, running=True, now=NOW),
        AccountStatus(name="beta", state="BACKOFF", restarts=3, last_exit="exit 3",
                      next_start_utc="2026-01-02T03:04:09+00:00"),
    ]  # fmt: skip
    snapshot = Snapshot(99, True, rows)
    lines = render_text(snapshot).splitlines()
    assert lines[0] == "supervisor: running (pid 99)"
    header = (
        "NAME STATE PID UPTIME RESTARTS LAST TICK NEXT TICK POS NAV P&L TODAY TOKEN EXPIRES"
        " LAST ERROR"
    )
    assert lines[1].split() == header.split()
    assert lines[2].split()[:11] == ["alpha", "HALTED", "42", "4m05s", "2", "03:04:00",
                                     "03:04:10", "1", "-", "-", "2026-01-02"]  # fmt: skip
    assert lines[2].endswith("5 failed ticks in a row")
    assert lines[3].split()[:2] == ["beta", "BACKOFF"] and lines[3].endswith("restart at 03:04:09")
    data = json.loads(render_json(snapshot))
    assert data["supervisor"] == {"pid": 99, "running": True, "config": None}
    assert data["accounts"][0]["state"] == "HALTED" and data["accounts"][1]["restarts"] == 3
    fields = "name state pid uptime_s restarts last_tick_utc next_tick_utc open_trades"
    assert set(data["accounts"][0]) >= {*fields.split(), "token_expires_utc", "last_error"}


def test_the_open_position_nav_and_todays_pl_show_in_table_and_json() -> None:
    """Worker fields from multirun.account.pricing (issue 16): one trade, several, none."""
    one = {"side": "BUY", "volume": 0.01, "entry_price": 97012.5, "unrealized_pl": 1.2}
    money = {"positions": [one], "nav": 100123.456, "realized_pl_today": -0.98}
    row = merge("alpha", SUP, {**WORKER, **money}, running=True, now=NOW)
    text = render_text(Snapshot(99, True, [row]))
    assert "BUY 0.01 @ 97012.5 +1.20  100,123.46  -0.98" in text
    data = json.loads(render_json(Snapshot(99, True, [row])))["accounts"][0]
    assert (data["positions"], data["nav"], data["realized_pl_today"]) == ([one], 100123.456, -0.98)
    two = merge("a", SUP, {**WORKER, "positions": [one, one]}, running=True, now=NOW)
    assert "2 trades +2.40" in render_text(Snapshot(99, True, [two]))
    none = merge("a", SUP, {**WORKER, "positions": [], "open_trades": 0}, running=True, now=NOW)
    assert render_text(Snapshot(99, True, [none])).splitlines()[2].split()[7] == "-"


def test_the_money_limits_figures_of_a_worker_show_in_json() -> None:
    """What an account's own limits are checked against (issue 24): the day's P&L, the
    equity estimate and its fall from the peak, as the worker's status.json says."""
    money = {"day_pnl": -312.4, "equity": 99687.6, "drawdown": 401.25}
    row = merge("alpha", SUP, {**WORKER, **money}, running=True, now=NOW)
    data = json.loads(render_json(Snapshot(99, True, [row])))["accounts"][0]
    assert (data["day_pnl"], data["equity"], data["drawdown"]) == (-312.4, 99687.6, 401.25)


def test_durations() -> None:
    assert [format_duration(s) for s in (5, 65, 3700, 90000)] == ["5s", "1m05s", "1h01m", "1d1h"]


def test_a_status_written_during_a_tick_shows_the_next_grid_point() -> None:
    during = {**WORKER, "state": "RUNNING", "interval_s": 10,
              "last_tick_utc": "2026-01-02T03:04:00.012+00:00",
              "next_tick_utc": "2026-01-02T03:04:00.000+00:00"}  # fmt: skip
    row = merge("a", SUP, during, running=True, now=NOW)
    assert row.next_tick_utc == "2026-01-02T03:04:10.000+00:00"


def test_the_error_a_previous_run_exited_with_shows_until_the_new_run_ticks() -> None:
    sup = {**SUP, "last_error": "session: connection failed or dropped"}
    starting = {**WORKER, "state": "RUNNING", "last_error": None, "ticks": 0}
    assert merge("a", sup, starting, running=True, now=NOW).last_error == sup["last_error"]
    ticking = {**starting, "ticks": 3}
    assert merge("a", sup, ticking, running=True, now=NOW).last_error is None


def test_a_journal_of_an_account_gone_from_the_file_stays_in_sight(tmp_path: Path) -> None:
    """Issue 23, case 1: an account renamed or removed from the file whose journal still
    holds a trade gets a row of its own, naming the command that closes it; a journal
    holding nothing does not."""
    runner = runner_for(tmp_path, "new")
    layout = StateDir(tmp_path)
    for name, holds in (("old", True), ("empty", False)):
        journal = Journal.for_account(layout.account(name), f"mr-{name}-")
        if holds:
            order = journal.new_intent("BTCUSD", "BUY", 0.5)
            journal.mark_acked(order.order_ref, "7")
        journal.close()
    rows = {row.name: row for row in collect(runner, now=NOW).accounts}
    assert set(rows) == {"new", "old"}
    assert rows["old"].state == "STOPPED"
    assert rows["old"].note == f"{ORPHANED}, 1 trade(s) held: multirun close old"
    assert "1 trade(s) held: multirun close old" in render_text(collect(runner, now=NOW))


def test_a_paused_worker_shows_paused_with_its_reason_its_pipe_first() -> None:
    """Said on its pipe (a full disk: its status.json stale) or written in its status.json;
    PAUSED is not a failure of status's exit code."""
    piped = {**SUP, "worker_state": "PAUSED", "worker_reason": "paused by operator"}
    stale = {**WORKER, "state": "RUNNING", "halted_reason": None, "last_error": None}
    row = merge("a", piped, stale, running=True, now=NOW)
    assert (row.state, row.paused_reason) == ("PAUSED", "paused by operator")
    written = {**stale, "state": "PAUSED", "paused_reason": "daily loss 312.40 > 300",
               "paused_until_utc": "2026-01-03T00:00:00+00:00"}  # fmt: skip
    other = merge("b", SUP, written, running=True, now=NOW)
    assert (other.state, other.paused_reason) == ("PAUSED", "daily loss 312.40 > 300")
    for each in (row, other):
        each.supervised = True
    snapshot = Snapshot(99, True, [row, other])
    assert snapshot.exit_code() == 0
    text = render_text(snapshot)
    assert "paused: daily loss 312.40 > 300 (lifts 2026-01-03 00:00)" in text
    assert "paused: paused by operator" in text
