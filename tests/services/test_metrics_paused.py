"""PAUSED in the metrics: its worker's word on its pipe first (a full disk), then its file."""

from __future__ import annotations

from pathlib import Path

from multirun.core import procutil
from tests.services.test_metrics import fresh_account, scrape, value


def test_paused_is_its_own_state_and_gauge_and_the_account_is_up(tmp_path: Path) -> None:
    layout = fresh_account(tmp_path, ["a", "b", "c"])
    accounts = {
        "a": {"state": "RUNNING", "pid": 1, "worker_state": "PAUSED", "worker_reason": "x"},
        "b": {"state": "RUNNING", "pid": 2},
        "c": {"state": "RUNNING", "pid": 3},
    }
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": accounts})
    status = {"pid": 2, "state": "PAUSED", "day_pnl": -312.4, "drawdown": 120.0}
    procutil.write_json_atomic(layout.account("b").status, status)
    found = scrape(tmp_path)
    for name, paused in (("a", 1), ("b", 1), ("c", 0)):
        assert value(found, "multirun_account_paused", account=name) == paused
        assert value(found, "multirun_account_state", account=name, state="PAUSED") == paused
        assert value(found, "multirun_account_up", account=name) == 1
    assert value(found, "multirun_accounts", state="PAUSED") == 2
    assert value(found, "multirun_day_pnl", account="b") == -312.4
    assert value(found, "multirun_drawdown", account="b") == 120.0
