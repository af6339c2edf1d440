"""The notifier watches what the supervisor runs (issue 23, cases 3 and 6): accounts a
reload added (they appear in the supervisor's entries, not in the start's list), and a
HALTED the supervisor knows from a worker's pipe while no file can be written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multirun.config import loader
from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.services.notify.events import Watcher
from multirun.services.notify.service import watched_specs


def test_an_account_added_by_a_reload_is_watched_like_the_others(tmp_path: Path) -> None:
    entries: dict[str, Any] = {"a": {"state": "RUNNING", "pid": 7}}
    watcher = Watcher(StateDir(tmp_path), ["a"], processes=lambda: entries)
    assert watcher.poll() == []
    why = "instrument BTCUSDT is refused"
    entries["btc"] = {"state": "FATAL", "pid": None, "restarts": 0,
                      "last_exit": "exit 78", "last_error": why}  # fmt: skip
    events = watcher.poll()
    assert [(e.kind, e.account) for e in events] == [("fatal", "btc")], events
    assert "instrument BTCUSDT is refused" in events[0].text
    entries["btc"] = {"state": "RUNNING", "pid": 9, "worker_state": "HALTED",
                      "worker_reason": "status.json could not be written"}  # fmt: skip
    events = watcher.poll()
    assert [(e.kind, e.account) for e in events] == [("halted", "btc")], events


def test_the_stop_alert_reads_the_accounts_a_reload_added(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    entry = ("  - name: {0}\n    user: u\n    api_key: k-123456789\n    accountid: {0}1\n"
             "    instrument: BTCUSD\n    strategy: random\n    volume: 1\n    interval: 1m\n"
             "    runmode: livetest\n    on_stop: keep\n")  # fmt: skip
    path.write_text("version: 1\nserver: sim\naccounts:\n" + entry.format("a"))
    runner = loader.load(path, environ={})
    path.write_text(path.read_text() + entry.format("added"))  # reloaded since
    specs = watched_specs(runner, ["a", "added"])
    assert [(s.name, s.on_stop) for s in specs] == [("a", "keep"), ("added", "keep")]


def test_refusals_are_read_from_status_json_and_each_told_once(tmp_path: Path) -> None:
    layout = StateDir(tmp_path)
    entries: dict[str, Any] = {"a": {"state": "RUNNING", "pid": 7}}
    watcher = Watcher(layout, ["a"], processes=lambda: entries)
    status = layout.account("a").status
    status.parent.mkdir(parents=True)

    def said(refused: int) -> None:
        written = {"state": "RUNNING", "orders_refused": refused, "last_error": "margin"}
        status.write_text(json.dumps(written))

    said(2)
    events = watcher.poll()
    assert [(e.kind, e.data["refused_total"]) for e in events] == [("rejected", 2)], events
    assert watcher.poll() == []  # nothing changed: nothing told again
    said(10)  # (another size: a change seen whatever the file system's time resolution)
    events = watcher.poll()
    assert [e.text for e in events] == ["a: 8 order(s) refused by the server: margin"]


def test_each_alert_field_of_status_json_reaches_its_alert_and_the_rest_tells_nothing(
    tmp_path: Path,
) -> None:
    """The watcher looks at an account again only when a field of ALERT_FIELDS changed;
    each of them still makes its alert (and a rewrite after a tick tells nothing)."""
    layout = StateDir(tmp_path)
    entries: dict[str, Any] = {"a": {"state": "RUNNING", "pid": 7}}
    watcher = Watcher(layout, ["a"], processes=lambda: entries)
    status = layout.account("a").status
    status.parent.mkdir(parents=True)
    base = {"pid": 7, "state": "RUNNING", "ticks": 1, "nav": 1000.0, "uncertain_orders": []}

    def told(**changed: Any) -> list[str]:
        procutil.write_json_atomic(status, {**base, **changed})
        return [e.text for e in watcher.poll()]

    assert told() == []
    assert told(ticks=2, nav=1001.0) == []  # a tick's rewrite: nothing new
    assert told(uncertain_orders=["r-1"]) == [
        "a: 1 order(s) uncertain (sent, not confirmed; the account opens nothing until "
        "settled): r-1"
    ]
    assert told(state="PAUSED", paused_reason="paused by operator") == [
        "a: PAUSED: paused by operator; nothing opens until resumed"
    ]
    assert told(state="HALTED", halted_reason="3 failed ticks") == ["a: HALTED: 3 failed ticks"]
    assert told(state="HALTED", halted_reason="3 failed ticks", ticks=9) == []
    assert told(state="HALTED", pid=8) == [  # another process's file: the supervisor's word
        "a: recovered: RUNNING again (was HALTED)"
    ]
    assert told(orders_refused=1, last_error="margin") == [
        "a: 1 order(s) refused by the server: margin"
    ]
