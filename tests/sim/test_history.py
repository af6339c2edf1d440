"""The account's past: /strategy_trade, /strategy_pl and /strategy_stats over HTTP."""

from __future__ import annotations

from tests.conftest import SimCaller, wait_until


def _closed(caller: SimCaller, trade_id: str) -> bool:
    return caller.ledger_entry(trade_id)["status"] == "CLOSED"


def _trade_and_close(caller: SimCaller, ref: str, buysell: str = "BUY") -> str:
    trade_id = caller.open(buysell=buysell, volume=0.5, orderRef=ref)
    caller.wait_open(trade_id)
    caller.ok("POST", "close_orders", tradeIDs=trade_id)
    wait_until(lambda: _closed(caller, trade_id))
    return trade_id


def test_strategy_trade_lists_opens_and_closes_in_ascending_time(caller: SimCaller) -> None:
    first = _trade_and_close(caller, "mr-a-1")
    second = caller.open(buysell="SELL", volume=0.25, orderRef="mr-a-2")
    caller.wait_open(second)
    body = caller.ok("GET", "strategy_trade", acdate="")
    rows = body["res"]
    assert body["count"] == len(rows) == 3
    assert [(r["trade_ID"], r["openclose"]) for r in rows] == [
        (first, "open"),
        (first, "close"),
        (second, "open"),
    ]
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    entry = caller.ledger_entry(first)
    opened, closed = rows[0], rows[1]
    assert opened["buysell"] == 1 and closed["buysell"] == -1  # the close of a buy sells
    assert opened["price"] == entry["fill_price"] and closed["price"] == entry["close_price"]
    assert closed["timestamp"] == entry["closed_utc"] and opened["timestamp"] == entry["filled_utc"]
    assert closed["realizedPL"] == entry["realized_pl"]
    assert rows[2]["buysell"] == -1 and rows[2]["volume"] == 0.25
    assert {r["order_ref"] for r in rows} == {"mr-a-1", "mr-a-2"}
    assert all(r["instrument"] == "BTCUSD" and isinstance(r["trade_ID"], str) for r in rows)


def test_strategy_trade_filters_by_order_ref_and_acdate(caller: SimCaller) -> None:
    trade_id = _trade_and_close(caller, "mr-b-1")
    caller.wait_open(caller.open(orderRef="mr-b-2"))
    rows = caller.ok("GET", "strategy_trade", orderRef="mr-b-1")["res"]
    assert [(r["trade_ID"], r["openclose"]) for r in rows] == [
        (trade_id, "open"),
        (trade_id, "close"),
    ]
    assert caller.ok("GET", "strategy_trade", orderRef="nobody")["res"] == []
    today = caller.ledger_entry(trade_id)["filled_utc"][:10]
    assert caller.ok("GET", "strategy_trade", acdate=today)["count"] == 3
    assert caller.ok("GET", "strategy_trade", acdate="2001-01-01")["res"] == []
    bad = caller.get("strategy_trade", acdate="yesterday")
    assert bad.status_code == 400 and "acdate" in bad.json()["err_msg"]


def test_strategy_trade_takes_runtime_id_and_a_token_only_if_sent(caller: SimCaller) -> None:
    trade_id = caller.open(orderRef="mr-c-1")
    caller.wait_open(trade_id)
    rows = caller.ok("GET", "strategy_trade", accountid=None, runtime_id="ACC-1")["res"]
    assert [r["trade_ID"] for r in rows] == [trade_id]
    assert caller.ok("GET", "strategy_trade", accountid="ACC-2")["res"] == []  # another account
    # ALGOGENE's own client sends user and api_key alone; a token sent is still checked
    assert caller.ok("GET", "strategy_trade", token=None)["count"] == 1
    assert caller.get("strategy_trade", token="forged").json()["err_msg"] == "invalid token"
    assert caller.get("strategy_trade", token=None, api_key="").status_code == 401


def test_strategy_trade_shows_no_unfilled_or_cancelled_order(caller: SimCaller) -> None:
    pending = caller.open(ordertype="LMT", price=1.0, orderRef="mr-d-1")
    caller.ok("POST", "cancel_orders", tradeIDs=pending)
    caller.open(ordertype="LMT", price=1.0, orderRef="mr-d-2")
    assert caller.ok("GET", "strategy_trade")["res"] == []


def test_strategy_pl_and_stats(caller: SimCaller) -> None:
    first = _trade_and_close(caller, "mr-e-1")
    second = _trade_and_close(caller, "mr-e-2", buysell="SELL")
    ledger = {str(o["tradeID"]): o for o in caller.sim.ledger()}
    realized = round(ledger[first]["realized_pl"] + ledger[second]["realized_pl"], 2)
    records = caller.ok("GET", "strategy_pl", acdate="")["res"]
    assert len(records) == 1
    assert records[0]["Acdate"] == ledger[first]["closed_utc"][:10]
    assert abs(records[0]["TotalPL"] - realized) < 0.02
    assert abs(records[0]["BTCUSD"] - realized) < 0.02
    stats = caller.ok("GET", "strategy_stats")
    assert stats["settings"]["BaseCurrency"] == "USD"
    assert stats["settings"]["strategyName"] == "ACC-1"
    performance = stats["performance"]
    assert performance["TradeCnt"] == 2
    assert abs(performance["TotalPnL"] - realized) < 0.02
    assert performance["AnnualSharpe"] == 0.0  # one day of records
    assert "res" not in stats
