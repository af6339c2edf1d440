"""Market data, routing, request encodings, and the /sim/ inspection endpoints."""

from __future__ import annotations

import json
import re

import pytest
import requests

from multirun.sim.market import INTERVALS
from tests.conftest import SimCaller, wait_until

BAR = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def get(sim, endpoint: str, **params) -> requests.Response:
    return requests.get(f"{sim.base_url}/{endpoint}", params=params, timeout=10)


def test_realtime_price_needs_no_token(sim) -> None:
    body = get(sim, "realtime_price", symbols="BTCUSD,eurusd").json()
    assert body["count"] == 2 and set(body["res"]) == {"BTCUSD", "EURUSD"}
    for quote in body["res"].values():
        assert set(quote) == {"timestamp", "bidPrice", "askPrice", "bidSize", "askSize",
                              "bidOrderBook", "askOrderBook"}  # fmt: skip
        assert quote["askPrice"] > quote["bidPrice"] > 0
        assert len(quote["bidOrderBook"]) == 5 and len(quote["bidOrderBook"][0]) == 2
        assert quote["bidOrderBook"][0][0] == quote["bidPrice"]
        assert quote["askOrderBook"][1][0] > quote["askPrice"]


@pytest.mark.parametrize("params", [{}, {"symbols": ""}, {"symbols": "BTCUSD,NOPE"}])
def test_realtime_price_errors(sim, params) -> None:
    reply = get(sim, "realtime_price", **params)
    assert reply.status_code == 400 and reply.json()["status"] == "FAIL"


@pytest.mark.parametrize("interval", list(INTERVALS))
def test_history_price_every_interval(sim, interval: str) -> None:
    body = get(sim, "history_price", instrument="EURUSD", interval=interval, count=5).json()
    assert body["count"] == 5
    bars = body["res"]
    times = [b["t"] for b in bars]
    assert times == sorted(times) and len(set(times)) == 5
    for bar in bars:
        assert set(bar) == {"t", "o", "h", "l", "c", "b", "a", "m", "v"}
        assert BAR.match(bar["t"])
        assert bar["l"] <= min(bar["o"], bar["c"]) <= max(bar["o"], bar["c"]) <= bar["h"]
        assert bar["b"] < bar["a"] and bar["v"] >= 0


@pytest.mark.slow
def test_history_is_deterministic_and_stable(sim_factory) -> None:
    one, two, other = sim_factory(seed=7), sim_factory(seed=7), sim_factory(seed=8)
    params = {"instrument": "BTCUSD", "interval": "H", "count": 1000,
              "timestamp": "2024-03-01 12:30:00"}  # fmt: skip
    first = get(one, "history_price", **params).json()
    assert first == get(two, "history_price", **params).json()
    assert first != get(other, "history_price", **params).json()
    assert first["res"][-1]["t"] == "2024-03-01 11:00:00"  # complete bars before the timestamp
    shorter = get(one, "history_price", **{**params, "count": 10}).json()
    assert shorter["res"] == first["res"][-10:]
    earlier = get(one, "history_price", **{**params, "timestamp": "2024-03-01 10:00:00"}).json()
    assert earlier["res"][-1] == first["res"][-3]
    one.set_price("BTCUSD", 99_999)  # pinning now leaves old bars alone
    assert get(one, "history_price", **params).json() == first


@pytest.mark.parametrize(
    "change",
    [
        {"instrument": "NOPE"},
        {"instrument": None},
        {"interval": "M3"},
        {"interval": None},
        {"count": 0},
        {"count": 1001},
        {"count": 2.5},
        {"count": "x"},
        {"count": None},
        {"timestamp": "yesterday"},
    ],
)
def test_history_price_errors(sim, change) -> None:
    params = {"instrument": "BTCUSD", "interval": "M", "count": 3, **change}
    reply = get(sim, "history_price", **{k: v for k, v in params.items() if v is not None})
    assert reply.status_code == 400 and reply.json()["status"] == "FAIL"


def test_list_and_meta_instrument(sim) -> None:
    listed = get(sim, "list_instrument").json()
    assert listed["res"] == sorted(listed["res"]) and listed["count"] == len(listed["res"]) >= 8
    for symbol in ("BTCUSD", "ETHUSD", "EURUSD", "USDJPY", "XAUUSD"):
        assert symbol in listed["res"]
    meta = get(sim, "meta_instrument", instrument="BTCUSD").json()["res"]
    assert meta == {"contractSize": 1.0, "market": "CRYPTO", "producttype": "SPOT",
                    "settleCurrency": "USD", "description": "Bitcoin vs US Dollar"}  # fmt: skip
    assert get(sim, "meta_instrument", instrument="NOPE").status_code == 400
    assert get(sim, "meta_instrument").status_code == 400


def test_post_body_is_json_with_or_without_content_type(caller) -> None:
    order = {"instrument": "BTCUSD", "buysell": "BUY", "volume": 1, "ordertype": "MKT"}
    as_json = requests.post(caller.sim.base_url + "/open_order", json=caller._params(order))
    assert as_json.status_code == 200
    as_form = requests.post(caller.sim.base_url + "/open_order", data=caller._params(order))
    assert as_form.status_code == 200  # form-encoded bodies are accepted too
    assert len(caller.sim.ledger()) == 2


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"'])
def test_bad_post_bodies_are_400(sim, body) -> None:
    reply = requests.post(sim.base_url + "/open_order", data=body)
    assert reply.status_code == 400 and reply.json()["status"] == "FAIL"


def test_unknown_endpoints_and_wrong_methods(sim) -> None:
    assert requests.get(sim.base_url + "/nope").status_code == 404
    assert requests.get(sim.root_url + "/elsewhere").status_code == 404
    assert requests.get(sim.root_url + "/sim/nope").status_code == 404
    reply = requests.get(sim.base_url + "/open_order")
    assert reply.status_code == 405 and reply.json()["status"] == "FAIL"
    assert requests.post(sim.base_url + "/session", data="{}").status_code == 405
    assert requests.post(sim.root_url + "/sim/ledger", data="{}").status_code == 405


def test_ledger_lists_every_order_with_its_history(caller) -> None:
    trade_id = caller.open(orderRef="led")
    caller.wait_open(trade_id)
    caller.ok("POST", "close_orders", tradeIDs=trade_id)
    wait_until(lambda: caller.ledger_entry(trade_id)["status"] == "CLOSED")
    orders = requests.get(caller.sim.root_url + "/sim/ledger").json()["orders"]
    assert orders == caller.sim.ledger()
    entry = orders[0]
    for name in ("tradeID", "user", "runmode", "accountid", "orderRef", "instrument", "buysell",
                 "volume", "ordertype", "status", "received_utc", "filled_utc", "fill_price",
                 "closed_utc", "close_price"):  # fmt: skip
        assert name in entry
    assert (entry["user"], entry["runmode"], entry["accountid"]) == ("alice", "livetest", "ACC-1")
    assert (entry["orderRef"], entry["buysell"], entry["ordertype"]) == ("led", 1, "MKT")
    assert "api_key" not in json.dumps(orders) and caller.token not in json.dumps(orders)


def test_stats_count_requests_tokens_and_rejections(sim) -> None:
    caller = SimCaller(sim).login()
    caller.get("balance")
    caller.get("balance", token="bad")
    get(sim, "list_instrument")
    stats = requests.get(sim.root_url + "/sim/stats").json()
    assert stats == sim.stats()
    assert stats["requests"]["session"] == 1 and stats["requests"]["balance"] == 2
    assert stats["requests"]["list_instrument"] == 1
    assert stats["tokens_issued"] == 1 and stats["auth_rejections"] == 1
    assert stats["faults_injected"] == {}


def test_clock_control(sim) -> None:
    before = requests.get(sim.root_url + "/sim/clock").json()
    after = requests.post(sim.root_url + "/sim/clock", data=json.dumps({"advance_s": 86400}))
    assert after.status_code == 200
    assert after.json()["offset_s"] == before["offset_s"] + 86400
    assert after.json()["now_utc"][:10] > before["now_utc"][:10]
    for bad in ({"advance_s": -1}, {"advance_s": "x"}, {}):
        assert requests.post(sim.root_url + "/sim/clock", data=json.dumps(bad)).status_code == 400


def test_price_control(sim) -> None:
    reply = requests.post(
        sim.root_url + "/sim/price", data=json.dumps({"instrument": "xauusd", "mid": 2000})
    ).json()
    assert reply["instrument"] == "XAUUSD"
    assert reply["bidPrice"] == pytest.approx(1999.85, abs=0.02)
    assert reply["askPrice"] == pytest.approx(2000.15, abs=0.02)
    for bad in ({"instrument": "NOPE", "mid": 1}, {"instrument": "BTCUSD", "mid": 0}):
        assert requests.post(sim.root_url + "/sim/price", data=json.dumps(bad)).status_code == 400
    assert requests.get(sim.root_url + "/sim/health").json() == {"status": "OK"}
