"""Order lifecycle: market, limit, stop, TP/SL, holdtime, timeinforce, cancel, close, update."""

from __future__ import annotations

import pytest

from multirun.sim.clock import parse_ts
from tests.conftest import SimCaller, wait_until


def pin(sim, mid: float, instrument: str = "BTCUSD") -> tuple[float, float]:
    quote = sim.set_price(instrument, mid)
    return quote["bidPrice"], quote["askPrice"]


def status_of(caller: SimCaller, trade_id: str) -> str:
    return caller.ledger_entry(trade_id)["status"]


def test_market_order_is_pending_then_open_at_the_ask(sim_factory) -> None:
    sim = sim_factory(fill_delay_ms=60_000)  # never fills on its own: the clock decides
    caller = SimCaller(sim).login()
    pin(sim, 30_000)
    trade_id = caller.open(buysell="BUY", volume=0.5, orderRef="ref-1")
    assert caller.opened() == {}
    assert caller.pending() == {}  # market orders are not listed as pending
    assert caller.ok("GET", "query_order", tradeID=trade_id)["status"] == "PENDING"
    assert status_of(caller, trade_id) == "PENDING"
    sim.advance(60)
    trade = caller.opened()[trade_id]
    entry = caller.ledger_entry(trade_id)
    assert entry["status"] == "OPEN" and trade["price"] == entry["fill_price"]
    _, ask_at_fill = sim.market.quote("BTCUSD", parse_ts(entry["filled_utc"]))
    assert trade["price"] == pytest.approx(ask_at_fill, abs=0.05)
    assert trade["order_Ref"] == "ref-1" and trade["volume"] == 0.5
    assert caller.ok("GET", "query_order", tradeID=trade_id)["status"] == "FILLED"


def test_sell_market_order_fills_at_the_bid(caller, sim) -> None:
    bid, _ = pin(sim, 30_000)
    trade = caller.wait_open(caller.open(buysell="SELL"))
    assert trade["buysell"] == -1
    assert abs(trade["price"] - bid) < 5


def test_buysell_accepts_words_and_numbers(caller) -> None:
    for side, expected in (("buy", 1), ("SELL", -1), (1, 1), (-1, -1), ("-1", -1)):
        trade = caller.wait_open(caller.open(buysell=side))
        assert trade["buysell"] == expected


@pytest.mark.parametrize(
    ("buysell", "ordertype", "level", "cross"),
    [
        ("BUY", "LMT", 29_000, 28_900),
        ("SELL", "LMT", 31_000, 31_100),
        ("BUY", "STOP", 31_000, 31_100),
        ("SELL", "STOP", 29_000, 28_900),
    ],
)
def test_limit_and_stop_orders_wait_until_crossed(
    caller, sim, buysell: str, ordertype: str, level: float, cross: float
) -> None:
    pin(sim, 30_000)
    trade_id = caller.open(buysell=buysell, ordertype=ordertype, price=level, timeinforce=3600)
    pending = caller.pending()[trade_id]
    assert pending["price"] == level and pending["timeinforce"] == 3600
    assert caller.opened() == {}
    bid, ask = pin(sim, cross)
    trade = caller.wait_open(trade_id)
    assert trade["price"] == pytest.approx(ask if buysell == "BUY" else bid, abs=5)
    assert caller.pending() == {}


def test_limit_price_is_required_and_positive(caller) -> None:
    for extra in ({}, {"price": 0}, {"price": "abc"}):
        reply = caller.post(
            "open_order", instrument="BTCUSD", buysell="BUY", volume=1, ordertype="LMT", **extra
        )
        assert reply.status_code == 400
        assert reply.json()["status"] == "FAIL" and "price" in reply.json()["err_msg"]


def test_timeinforce_lapses_and_cancels_a_pending_order(caller, sim) -> None:
    pin(sim, 30_000)
    trade_id = caller.open(ordertype="LMT", price=20_000, timeinforce=30)
    sim.advance(29)
    assert trade_id in caller.pending()
    sim.advance(2)
    assert caller.pending() == {}
    entry = caller.ledger_entry(trade_id)
    assert entry["status"] == "CANCELLED" and entry["close_reason"] == "timeinforce lapsed"
    assert caller.ok("GET", "query_order", tradeID=trade_id)["status"] == "CANCELLED"


def test_cancel_pending_orders(caller, sim) -> None:
    pin(sim, 30_000)
    first = caller.open(ordertype="LMT", price=20_000)
    second = caller.open(ordertype="STOP", price=40_000)
    reply = caller.ok("POST", "cancel_orders", tradeIDs=f"{first},{second}")
    assert reply == {"status": "SUCCESS", "res": "Submitted for BULK_CANCEL"}
    assert caller.pending() == {}
    assert {status_of(caller, first), status_of(caller, second)} == {"CANCELLED"}
    again = caller.post("cancel_orders", tradeIDs=first)
    assert again.status_code == 404 and again.json()["status"] == "FAIL"


@pytest.mark.parametrize(
    ("buysell", "move", "reason"),
    [("BUY", +300, "take profit"), ("BUY", -300, "stop loss"),
     ("SELL", -300, "take profit"), ("SELL", +300, "stop loss")],
)  # fmt: skip
def test_take_profit_and_stop_loss_close_the_trade(
    caller, sim, buysell: str, move: float, reason: str
) -> None:
    pin(sim, 30_000)
    side = 1 if buysell == "BUY" else -1
    tp, sl = 30_000 + side * 200, 30_000 - side * 200
    trade_id = caller.open(buysell=buysell, takeProfitLevel=tp, stopLossLevel=sl)
    trade = caller.wait_open(trade_id)
    assert (trade["takeProfitLevel"], trade["stopLossLevel"]) == (tp, sl)
    pin(sim, 30_000 + move)
    wait_until(lambda: status_of(caller, trade_id) == "CLOSED")
    entry = caller.ledger_entry(trade_id)
    assert entry["close_reason"] == reason
    assert (entry["realized_pl"] > 0) == (reason == "take profit")


def test_holdtime_closes_the_trade(caller, sim) -> None:
    trade_id = caller.open(holdtime=120)
    assert caller.wait_open(trade_id)["holdtime"] == 120.0
    sim.advance(100)
    assert trade_id in caller.opened()
    sim.advance(25)
    assert trade_id not in caller.opened()
    assert caller.ledger_entry(trade_id)["close_reason"] == "holdtime"


def test_close_by_trade_ids_list(caller) -> None:
    ids = [caller.open() for _ in range(3)]
    for trade_id in ids:
        caller.wait_open(trade_id)
    reply = caller.ok("POST", "close_orders", tradeIDs=",".join(ids[:2]))
    assert reply["res"] == "Submitted close order request for " + "".join(
        f"'{i}'," for i in ids[:2]
    )
    wait_until(lambda: set(caller.opened()) == {ids[2]})
    entry = caller.ledger_entry(ids[0])
    assert entry["status"] == "CLOSED" and entry["close_price"] is not None
    assert entry["closed_utc"] >= entry["filled_utc"] >= entry["received_utc"]


def test_close_by_order_ref_and_trade_ids_win(caller) -> None:
    tagged = [caller.open(orderRef="grid") for _ in range(2)]
    other = caller.open(orderRef="other")
    for trade_id in [*tagged, other]:
        caller.wait_open(trade_id)
    caller.ok("POST", "close_orders", orderRef="grid")
    wait_until(lambda: set(caller.opened()) == {other})
    caller.ok("POST", "close_orders", tradeIDs=other, orderRef="no-such-ref")
    wait_until(lambda: caller.opened() == {})


def test_close_errors(caller) -> None:
    assert caller.post("close_orders").status_code == 400
    assert caller.post("close_orders", tradeIDs="abc").status_code == 400
    assert caller.post("close_orders", tradeIDs="123").status_code == 404
    assert caller.post("close_orders", orderRef="nothing").status_code == 404


def test_update_opened_and_pending_orders(caller, sim) -> None:
    pin(sim, 30_000)
    opened = caller.open()
    caller.wait_open(opened)
    reply = caller.ok(
        "POST", "update_opened_order", tradeID=opened, takeProfitLevel=35_000, holdtime=5,
        orderRef="new-ref",
    )  # fmt: skip
    assert reply == {"status": "SUCCESS", "res": "Submitted for order update!"}
    trade = caller.opened()[opened]
    assert (trade["takeProfitLevel"], trade["holdtime"], trade["order_Ref"]) == (
        35_000,
        5.0,
        "new-ref",
    )
    pending = caller.open(ordertype="LMT", price=20_000)
    reply = caller.ok("POST", "update_pending_order", tradeID=pending, price=21_000)
    assert reply == {"status": "SUCCESS", "res": "Submitted for pending order update!"}
    assert caller.pending()[pending]["price"] == 21_000
    assert caller.post("update_opened_order", tradeID=pending).status_code == 404
    assert caller.post("update_pending_order", tradeID=opened).status_code == 404
    assert caller.post("update_pending_order", tradeID="999").status_code == 404
    assert caller.post("update_pending_order").status_code == 400


def test_balance_positions_and_pnl_stay_consistent(sim_factory) -> None:
    sim = sim_factory(initial_balance=100_000.0)
    caller = SimCaller(sim).login()
    pin(sim, 30_000)
    first = caller.open(volume=1)
    second = caller.open(buysell="SELL", volume=0.25)
    for trade_id in (first, second):
        caller.wait_open(trade_id)
    balance = caller.ok("GET", "balance")["res"]
    trades = caller.opened()
    unrealized = sum(t["unrealizedPL"] for t in trades.values())
    assert balance["unrealized_PL"] == pytest.approx(unrealized, abs=1.0)
    assert balance["NAV"] == pytest.approx(100_000 + balance["unrealized_PL"], abs=0.02)
    assert balance["available_Balance"] == pytest.approx(
        balance["NAV"] - balance["margin_Used"], abs=0.02
    )
    assert balance["margin_Used"] > 0 and balance["BaseCurrency"] == "USD"
    positions = caller.ok("GET", "positions")
    assert positions["count"] == 1
    assert positions["res"]["BTCUSD"]["netVolume"] == 0.75
    caller.ok("POST", "close_orders", tradeIDs=f"{first},{second}")
    wait_until(lambda: caller.opened() == {})
    realized = sum(o["realized_pl"] for o in sim.ledger())
    after = caller.ok("GET", "balance")["res"]
    assert after["realized_PL"] == pytest.approx(realized, abs=0.02)
    assert after["NAV"] == pytest.approx(100_000 + realized, abs=0.02)
    assert after["margin_Used"] == 0 and after["unrealized_PL"] == 0
    assert caller.ok("GET", "positions") == {"count": 0, "res": {}}


def test_fx_pnl_is_in_usd(caller, sim) -> None:
    pin(sim, 150.0, "USDJPY")
    trade_id = caller.open(instrument="USDJPY", volume=1)
    caller.wait_open(trade_id)
    pin(sim, 151.5, "USDJPY")
    caller.ok("POST", "close_orders", tradeIDs=trade_id)
    wait_until(lambda: status_of(caller, trade_id) == "CLOSED")
    # 1 lot = 100,000 USD of USDJPY; +1.5 JPY -> about 150,000 JPY -> about 990 USD
    assert 900 < caller.ledger_entry(trade_id)["realized_pl"] < 1000


def test_insufficient_margin_is_refused(sim_factory) -> None:
    caller = SimCaller(sim_factory(initial_balance=1000.0)).login()
    reply = caller.post(
        "open_order", instrument="BTCUSD", buysell="BUY", volume=10, ordertype="MKT"
    )
    assert reply.status_code == 400 and "margin" in reply.json()["err_msg"]
    assert caller.sim.ledger() == []


def test_open_order_parameter_errors(caller) -> None:
    good = {"instrument": "BTCUSD", "buysell": "BUY", "volume": 1, "ordertype": "MKT"}
    for change in (
        {"instrument": "NOPE"},
        {"instrument": None},
        {"buysell": "HOLD"},
        {"buysell": None},
        {"volume": 0},
        {"volume": -1},
        {"volume": "x"},
        {"volume": None},
        {"ordertype": "FOK"},
        {"ordertype": None},
        {"takeProfitLevel": "high"},
        {"holdtime": -5},
    ):
        reply = caller.post("open_order", **{**good, **change})
        assert reply.status_code == 400, change
        body = reply.json()
        assert body["status"] == "FAIL" and body["err_msg"], change
    assert caller.sim.ledger() == []


def test_query_order_and_listing_filters(caller) -> None:
    trade_id = caller.open(orderRef="q")
    caller.wait_open(trade_id)
    order = caller.ok("GET", "query_order", tradeID=trade_id)
    assert order["tradeID"] == int(trade_id) and order["orderRef"] == "q"
    assert order["status"] == "FILLED" and order["err_msg"] == ""
    for name in ("buysell", "price", "volume", "timestamp", "takeProfitLevel", "stopLossLevel",
                 "holdtime", "trailingstop", "timeinforce", "instrument", "symbol", "expiry",
                 "right", "strike"):  # fmt: skip
        assert name in order
    assert caller.get("query_order", tradeID="1").status_code == 404
    assert caller.get("query_order", tradeID="x").status_code == 400
    assert caller.get("query_order").status_code == 400
    assert caller.ok("GET", "opened_trades", tradeID="1") == {"count": 0, "res": []}
    assert caller.ok("GET", "opened_trades", tradeID=trade_id)["count"] == 1


def test_accounts_do_not_see_each_other(sim) -> None:
    mine = SimCaller(sim, accountid="ACC-1").login()
    theirs = SimCaller(sim, accountid="ACC-2").login()
    trade_id = mine.open()
    mine.wait_open(trade_id)
    assert theirs.opened() == {}
    assert theirs.get("query_order", tradeID=trade_id).status_code == 404
    assert theirs.post("close_orders", tradeIDs=trade_id).status_code == 404
    rows = mine.ok("GET", "accounts")
    assert rows["count"] == 2
    assert [r["accountid"] for r in rows["res"]] == ["ACC-1", "ACC-2"]
    row = rows["res"][0]
    assert set(row) == {"accountid", "runmode", "NAV", "availableBalance", "marginUsed",
                        "realizedPL", "unrealizedPL", "lastUpdatedTime", "isTrading"}  # fmt: skip
    assert row["isTrading"] is True and row["runmode"] == "livetest"


def test_closing_a_market_order_before_it_fills_is_refused(sim_factory) -> None:
    """Clients must wait for the fill: a close sent during PENDING_TO_FILL does nothing."""
    sim = sim_factory(fill_delay_ms=60_000)
    caller = SimCaller(sim).login()
    trade_id = caller.open()
    reply = caller.post("close_orders", tradeIDs=trade_id)
    assert reply.status_code == 404 and "not open yet" in reply.json()["err_msg"]
    sim.advance(60)
    assert trade_id in caller.opened()
    caller.ok("POST", "close_orders", tradeIDs=trade_id)
    assert trade_id in caller.opened()  # closing takes the fill delay too
    sim.advance(60)
    assert caller.opened() == {}


def test_pending_market_order_can_be_cancelled(sim_factory) -> None:
    sim = sim_factory(fill_delay_ms=60_000)
    caller = SimCaller(sim).login()
    trade_id = caller.open()
    caller.ok("POST", "cancel_orders", tradeIDs=trade_id)
    sim.advance(60)
    assert caller.opened() == {}
    assert caller.ledger_entry(trade_id)["status"] == "CANCELLED"


def test_a_rejected_update_changes_nothing(caller, sim) -> None:
    pin(sim, 30_000)
    trade_id = caller.open(ordertype="LMT", price=20_000)
    reply = caller.post("update_pending_order", tradeID=trade_id, takeProfitLevel=1, price=-5)
    assert reply.status_code == 400
    assert caller.pending()[trade_id]["takeProfitLevel"] == 0.0


def test_trade_ids_never_repeat_across_runs_of_one_seed(sim_factory) -> None:
    """Two simulators of one seed, one after the other (as the supervisor's restarts): the
    second hands out only ids above the first's, refused orders use none, and a clock the
    first one advanced a year does not matter."""

    def ids(advance_s: float = 0.0) -> list[int]:
        sim = sim_factory(seed=4, token_ttl_s=1e9)  # the token outlives the jump
        caller = SimCaller(sim).login()
        sim.advance(advance_s)
        caller.post("open_order", instrument="NOPE")  # refused: uses no id
        opened = [int(caller.open()) for _ in range(3)]
        sim.stop()
        return opened

    first = ids(advance_s=365 * 86_400)
    second = ids()
    assert first == sorted(first) and second == sorted(second)
    assert max(first) < min(second)
    assert len(set(first + second)) == 6
    assert all(i < 2**53 for i in second)  # a JSON number any client reads exactly


# --- events due during a clock jump happen at their due moment, not at the jump's end ---


def test_a_jump_fills_a_market_order_when_due_and_holdtime_counts_from_then(sim_factory) -> None:
    sim = sim_factory(fill_delay_ms=1000)
    caller = SimCaller(sim).login()
    trade_id = caller.open(holdtime=30)
    sim.advance(100)
    entry = caller.ledger_entry(trade_id)
    assert entry["status"] == "CLOSED" and entry["close_reason"] == "holdtime"
    received, filled = parse_ts(entry["received_utc"]), parse_ts(entry["filled_utc"])
    assert filled - received == pytest.approx(1.0, abs=0.01)
    assert parse_ts(entry["closed_utc"]) - filled == pytest.approx(30.0, abs=0.01)
    # at that moment's prices (timestamps keep microseconds: the quote may move a cent)
    assert entry["fill_price"] == pytest.approx(sim.market.quote("BTCUSD", filled)[1], abs=0.05)
    bid_at_close, _ = sim.market.quote("BTCUSD", parse_ts(entry["closed_utc"]))
    assert entry["close_price"] == pytest.approx(bid_at_close, abs=0.05)


def test_a_jump_closes_a_requested_close_at_its_due_moment(sim_factory) -> None:
    sim = sim_factory(fill_delay_ms=1000)
    caller = SimCaller(sim).login()
    trade_id = caller.open()
    sim.advance(5)
    caller.ok("POST", "close_orders", tradeIDs=trade_id)
    asked = sim.clock.now()
    sim.advance(100)
    closed = parse_ts(caller.ledger_entry(trade_id)["closed_utc"])
    assert asked < closed < asked + 1.1


def test_a_lapsed_timeinforce_cancels_at_the_lapse(caller, sim) -> None:
    pin(sim, 30_000)
    trade_id = caller.open(ordertype="LMT", price=20_000, timeinforce=30)
    sim.advance(100)
    entry = caller.ledger_entry(trade_id)
    assert entry["status"] == "CANCELLED"
    lapse = parse_ts(entry["received_utc"]) + 30
    assert parse_ts(entry["closed_utc"]) == pytest.approx(lapse, abs=0.01)


@pytest.mark.parametrize(("timeinforce", "status"), [(30, "CANCELLED"), (120, "OPEN")])
def test_a_market_order_fills_or_lapses_whichever_comes_first(
    sim_factory, timeinforce: float, status: str
) -> None:
    sim = sim_factory(fill_delay_ms=60_000)
    caller = SimCaller(sim).login()
    trade_id = caller.open(timeinforce=timeinforce)
    sim.advance(200)
    assert caller.ledger_entry(trade_id)["status"] == status


def test_a_shortened_holdtime_closes_no_earlier_than_it_was_set(caller, sim) -> None:
    trade_id = caller.open()
    caller.wait_open(trade_id)
    sim.advance(100)
    updated = sim.clock.now()
    caller.ok("POST", "update_opened_order", tradeID=trade_id, holdtime=5)
    sim.advance(0)
    entry = caller.ledger_entry(trade_id)
    assert entry["status"] == "CLOSED" and entry["close_reason"] == "holdtime"
    assert parse_ts(entry["closed_utc"]) >= updated
