"""``multirun report`` after a real run: its counts are the simulator's ledger's.

Two accounts trade on the simulator under a real ``multirun start``, are stopped (their
trades closed), and ``multirun report --json`` is read back. Tolerance: each closed
trade's realized P&L is the simulator's own figure rounded to the cent, so an account's
sum may differ from the ledger's by at most half a cent per trade.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from multirun.sim import SimServer
from tests.conftest import wait_until
from tests.supervisor import test_start_stop as test_supervisor_cli
from tests.supervisor.test_start_stop import cli

start = test_supervisor_cli.start  # the fixture, shared

CONFIG = """\
version: 1
server: {server}
state_dir: {state}
stop_timeout: 20
defaults:
  user: alice
  api_key: alice-key-1234
  runmode: livetest
  strategy: random
  params:
    seed: 4  # BUY, SELL, BUY: a close every tick from the second
  instrument: BTCUSD
  volume: 1
  interval: 1s
  on_stop: close
accounts:
  - name: rep-a
    accountid: REP-A
  - name: rep-b
    accountid: REP-B
    instrument: EURUSD
    volume: 2
"""


def closed_per_account(sim: SimServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for order in sim.ledger():
        if order["status"] == "CLOSED":
            account = str(order["accountid"])
            counts[account] = counts.get(account, 0) + 1
    return counts


@pytest.mark.process
def test_report_counts_and_pnl_equal_the_ledger(sim: SimServer, tmp_path: Path, start: Any) -> None:
    config = tmp_path / "runner.yaml"
    config.write_text(CONFIG.format(server=sim.base_url, state=tmp_path / "state"))
    proc = start(config)
    wait_until(lambda: all(closed_per_account(sim).get(a, 0) >= 2 for a in ("REP-A", "REP-B")), 30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0

    result = cli("report", str(config), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {row["name"]: row for row in report["accounts"]}
    ledger = sim.ledger()
    for name, accountid in (("rep-a", "REP-A"), ("rep-b", "REP-B")):
        ours = [o for o in ledger if o["accountid"] == accountid]
        closed = [o for o in ours if o["status"] == "CLOSED"]
        row = by_name[name]
        assert row["orders"] == len(ours)
        assert row["trades_closed"] == len(closed) >= 2
        assert row["open_count"] == 0
        expected = sum(float(o["realized_pl"]) for o in closed)
        assert abs(row["realized_pl"] - expected) <= 0.005 * len(closed) + 1e-9
    total = report["total"]
    assert total["orders"] == len(ledger)
    assert total["trades_closed"] == sum(1 for o in ledger if o["status"] == "CLOSED")
