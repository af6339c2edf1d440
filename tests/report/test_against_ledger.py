"""``multirun report`` after a real run: its counts are the simulator's ledger's.

Two accounts trade on the simulator under a real ``multirun start``, are stopped (their
trades closed), and ``multirun report --json --html --csv`` is read back. Tolerance: each
closed trade's realized P&L is the simulator's own figure rounded to the cent, so an
account's sum may differ from the ledger's by at most half a cent per trade.

Issue 25: MAX DD covers the fall from the period's start (the ledger's realized P&L
stepped at each close, from 0, and the curves the chart draws), the curves end at the
table's REALIZED + UNREAL, every trade of the ledger is a row of the HTML trades table,
and the CSV and JSON hold no raw float (money to the cent: the account currency's
precision is not in the API; prices to the simulator's instrument decimals).
"""

from __future__ import annotations

import html
import json
import re
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from multirun.report.stats import max_drawdown
from multirun.sim import SimServer
from multirun.sim.market import INSTRUMENTS
from tests.conftest import wait_until
from tests.report.test_stats import assert_no_raw_float
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

    page, table = tmp_path / "report.html", tmp_path / "report.csv"
    result = cli("report", str(config), "--json", "--html", str(page), "--csv", str(table))
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

    # issue 25 on the same run
    places = {symbol: inst.decimals for symbol, inst in INSTRUMENTS.items()}
    assert_no_raw_float(result.stdout, table.read_text(), places)
    for name, accountid in (("rep-a", "REP-A"), ("rep-b", "REP-B")):
        mine = [o for o in ledger if o["accountid"] == accountid and o["status"] == "CLOSED"]
        closed = sorted(mine, key=lambda o: str(o["closed_utc"]))
        steps, total_pl = [0.0], 0.0
        for order in closed:
            total_pl += float(order["realized_pl"])
            steps.append(total_pl)
        fall = max_drawdown(steps) or 0.0
        assert by_name[name]["max_drawdown"] >= fall - 0.005 * len(closed), (name, fall)
    drawn_curves_end_at_the_table(config.parent / "state", report)
    every_ledger_trade_in_the_html(page.read_text(), ledger, places)


def drawn_curves_end_at_the_table(state: Path, report: dict[str, Any]) -> None:
    """The chart's lines (as matplotlib holds them): each ends at its row's REALIZED +
    UNREAL and falls no further than its MAX DD."""
    import numpy as np

    from multirun.report import build, chart

    rows = {row["name"]: row for row in [*report["accounts"], report["total"]]}
    fig = chart.figure(build(state).logs)
    try:
        lines = {
            str(line.get_label()): np.asarray(line.get_ydata(), dtype=float).tolist()
            for line in fig.axes[0].lines
        }
    finally:
        chart.close(fig)
    for label, name in (("rep-a", "rep-a"), ("rep-b", "rep-b"), ("all accounts", "TOTAL")):
        values, row = lines[label], rows[name]
        assert values[0] == 0.0, label  # from before the first order
        assert values[-1] == pytest.approx(row["realized_pl"] + row["unrealized_pl"], abs=0.011)
        assert (max_drawdown(values) or 0.0) <= row["max_drawdown"] + 0.011, label


def every_ledger_trade_in_the_html(page: str, ledger: list[dict[str, Any]], places: Any) -> None:
    section = page[page.index("<table class='trades'>") :]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", section):
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells:
            rows[cells[1]] = cells
    names = {"REP-A": "rep-a", "REP-B": "rep-b"}
    closed = [o for o in ledger if o["status"] == "CLOSED"]
    assert len(rows) == len(closed)
    for order in closed:
        cells = rows[str(order["tradeID"])]
        digits = places[order["instrument"]]
        assert cells[:5] == [names[str(order["accountid"])], str(order["tradeID"]),
                             order["instrument"], "BUY" if order["buysell"] == 1 else "SELL",
                             f"{order['volume']:g}"]  # fmt: skip
        assert cells[6] == f"{order['fill_price']:,.{digits}f}"
        assert cells[8] == f"{order['close_price']:,.{digits}f}"
        assert float(cells[9].replace(",", "")) == pytest.approx(order["realized_pl"], abs=0.005)
        for shown, server in ((cells[5], order["filled_utc"]), (cells[7], order["closed_utc"])):
            assert abs(_seconds(shown) - _seconds(str(server))) < 2.0, (shown, server)


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
