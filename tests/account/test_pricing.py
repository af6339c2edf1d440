"""Prices and P&L in a real worker run against the simulator: journal, log lines, status.

Tolerance: the journal's realized P&L per closed trade is the simulator's
``/strategy_trade`` ``realizedPL`` (source ``'history'``), equal to the cent (the
simulator rounds it to cents; we store what it says).
"""

from __future__ import annotations

import logging
import sqlite3

import pytest

from multirun.account.journal.store import CLOSED
from multirun.sim import SimServer
from tests.account import test_worker
from tests.account.test_worker import Harness, Script, tick
from tests.conftest import SimCaller, wait_until

harness = test_worker.harness  # the fixtures, shared
alice = test_worker.alice

CENT = 0.005


def test_fills_closes_pnl_and_equity_are_journaled_and_logged(
    harness: Harness, alice: SimCaller, sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="multirun.worker")
    worker = harness.worker(Script("BUY", "FLAT", "SELL"), on_stop="close")
    tick(worker)
    (held,) = worker.journal.held()
    assert held.fill_price is not None and held.price_source == "listing"
    assert held.filled_ts is not None and abs(held.filled_ts - held.created_ts) < 60
    status = worker.status()
    (position,) = status["positions"]
    assert (position["side"], position["volume"], position["instrument"]) == ("BUY", 1.0, "BTCUSD")
    assert position["entry_price"] == held.fill_price
    assert status["nav"] is not None and status["realized_pl_today"] == 0.0
    tick(worker)  # FLAT: closed, priced from the history
    tick(worker)  # SELL: opened; the stop closes it
    worker.stop.set("test")
    assert worker.finish() == 0

    history = alice.ok("GET", "strategy_trade", acdate="")["res"]
    closes = {r["order_ref"]: r for r in history if r["openclose"] == "close"}
    opens = {r["order_ref"]: r for r in history if r["openclose"] == "open"}
    rows = [r for r in worker.journal.all_orders() if r.state == CLOSED]
    assert len(rows) == 2 and {r.order_ref for r in rows} == set(closes)
    for row in rows:
        assert row.price_source == "history"
        assert row.fill_price == pytest.approx(opens[row.order_ref]["price"])
        assert row.close_price == pytest.approx(closes[row.order_ref]["price"])
        assert row.realized_pl == pytest.approx(closes[row.order_ref]["realizedPL"], abs=CENT)
        assert row.realized_pl != 0.0  # at least the spread
    total = sum(r.realized_pl or 0.0 for r in rows)
    balance = alice.ok("GET", "balance")["res"]
    assert balance["realized_PL"] == pytest.approx(total, abs=2 * CENT)
    assert worker.status()["realized_pl_today"] == pytest.approx(total, abs=CENT)
    assert worker.status()["positions"] == []

    db = sqlite3.connect(worker.journal.path)
    equity = db.execute("SELECT ts, nav, realized_pl, unrealized_pl FROM equity").fetchall()
    db.close()
    assert len(equity) >= 2  # the first tick's and the stop's (15 s apart at most once)
    assert equity[-1][1] == pytest.approx(balance["NAV"], abs=CENT)
    assert equity[-1][2] == pytest.approx(total, abs=2 * CENT)

    text = caplog.text
    assert f"opened BUY 1.0 BTCUSD @ {held.fill_price:g} (trade {held.trade_id}, " in text
    first = next(r for r in rows if r.side == "BUY")
    assert (
        f"closed BUY 1.0 BTCUSD @ {first.close_price:g}, P&L {first.realized_pl:+.2f} "
        f"(trade {first.trade_id}, {first.order_ref}; history)"
    ) in text


def test_sim_nav_follows_trades_and_market(sim: SimServer, alice: SimCaller) -> None:
    """The simulator's /balance and /accounts: NAV = cash + unrealized, realized P&L
    accumulates the closes (a non-trivial report needs both)."""
    before = alice.ok("GET", "balance")["res"]
    trade = alice.open("BTCUSD", volume=1.0)
    alice.wait_open(trade)
    during = alice.ok("GET", "balance")["res"]
    assert during["unrealized_PL"] != 0.0  # the spread at least
    assert during["NAV"] == pytest.approx(before["NAV"] + during["unrealized_PL"], abs=0.02)
    alice.ok("POST", "close_orders", tradeIDs=trade)
    wait_until(lambda: trade not in alice.opened(), 5.0)
    after = alice.ok("GET", "balance")["res"]
    assert after["realized_PL"] != before["realized_PL"]
    assert after["NAV"] == pytest.approx(
        before["NAV"] + after["realized_PL"] - before["realized_PL"], abs=0.02
    )
    (row,) = [a for a in alice.ok("GET", "accounts")["res"] if a["accountid"] == "ACC-1"]
    assert row["NAV"] == pytest.approx(after["NAV"], abs=0.02)


def test_status_unrealized_is_the_positions_not_the_last_balance_sample(
    harness: Harness, sim: SimServer
) -> None:
    """/balance is sampled once a minute; a position's unrealized P&L is listed at every
    tick: the account's figure is its positions' (what the day's P&L counts), so a
    page never shows a loss a minute after its close, nor 0 beside a losing position."""
    worker = harness.worker(Script("BUY", None, "FLAT"), on_stop="close")
    tick(worker)  # opened
    tick(worker)  # listed: its unrealized P&L known (the spread: a loss)
    status = worker.status()
    (position,) = status["positions"]
    assert position["unrealized_pl"] is not None and position["unrealized_pl"] < 0
    assert status["unrealized_pl"] == pytest.approx(position["unrealized_pl"], abs=CENT)
    tick(worker)  # FLAT: closed
    sample = worker.pricing.balance
    assert sample is not None and sample.unrealized_pl < 0  # sampled with the trade open
    assert worker.status()["unrealized_pl"] == 0.0 and worker.status()["positions"] == []
    worker.stop.set("test")
    assert worker.finish() == 0
