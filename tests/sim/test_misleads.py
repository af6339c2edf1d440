"""A server that misleads: partial listings, missing order_Ref, late execution, refusal
after execution and one token per user, over HTTP against a real SimServer; the ledger
stays exact (an executed order is in it once)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from multirun.core.errors import UsageError
from multirun.sim import FaultSettings
from multirun.sim.options import config_from_options
from tests.conftest import SimCaller, wait_until
from tests.sim.test_faults import outcomes

ORDER = {"instrument": "BTCUSD", "buysell": "BUY", "volume": 0.1, "ordertype": "MKT"}


def three_open(sim_factory) -> SimCaller:
    caller = SimCaller(sim_factory()).login()
    for n in range(3):
        caller.wait_open(caller.open(volume=0.1, orderRef=f"mr-x-{n}"))
    caller.open(ordertype="LMT", price=1.0, volume=0.1, orderRef="mr-x-lmt")
    return caller


def test_partial_listing_omits_some_or_all_trades(sim_factory) -> None:
    caller = three_open(sim_factory)
    caller.sim.set_faults(partial_listing_rate=1.0)
    sizes = []
    for _ in range(20):
        body = caller.ok("GET", "opened_trades")
        assert body["count"] == len(body["res"]) < 3
        sizes.append(body["count"])
    assert 0 in sizes and {1, 2} & set(sizes)  # empty ones and partial ones
    assert caller.ok("GET", "pending_trades")["count"] == 0  # its one order left out
    assert caller.ok("GET", "balance")["res"]["NAV"] > 0  # not a listing: untouched
    assert caller.sim.stats()["faults_injected"] == {"partial_listing": 21}
    caller.sim.set_faults(partial_listing_rate=0.0)
    assert len(caller.opened()) == 3  # nothing was closed
    assert [o["status"] for o in caller.sim.ledger()] == ["OPEN"] * 3 + ["PENDING"]


def test_missing_ref_drops_order_ref_from_some_listed_trades(sim_factory) -> None:
    caller = three_open(sim_factory)
    caller.sim.set_faults(missing_ref_rate=1.0)
    seen_with = seen_without = 0
    for _ in range(10):
        rows = caller.ok("GET", "opened_trades")["res"]
        assert len(rows) == 3
        without = sum("order_Ref" not in row for row in rows)
        assert without >= 1
        seen_without += without
        seen_with += 3 - without
    assert seen_with > 0 and seen_without > 0
    assert "order_Ref" not in caller.ok("GET", "pending_trades")["res"][0]
    caller.sim.set_faults(missing_ref_rate=0.0)
    assert sorted(t["order_Ref"] for t in caller.opened().values()) == [
        "mr-x-0",
        "mr-x-1",
        "mr-x-2",
    ]


def test_late_exec_dropped_reply_the_order_is_taken_on_late_exec_s_later(sim_factory) -> None:
    caller = SimCaller(sim_factory()).login()
    caller.sim.set_faults(late_exec_rate=1.0, late_exec_s=30, late_exec_ack=0.0)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        caller.post("open_order", orderRef="mr-late-1", **ORDER)
    assert time.monotonic() - started < 5  # dropped at once
    caller.sim.set_faults(late_exec_rate=0.0)
    ledger = caller.sim.ledger()
    assert len(ledger) == 1 and ledger[0]["status"] == "PENDING"
    trade_id = str(ledger[0]["tradeID"])
    caller.sim.advance(29)
    assert caller.opened() == {} and caller.pending() == {}
    assert caller.ok("GET", "strategy_trade", orderRef="mr-late-1")["res"] == []
    assert caller.get("query_order", tradeID=trade_id).status_code == 404
    caller.sim.advance(1.5)
    trade = caller.wait_open(trade_id)
    assert trade["order_Ref"] == "mr-late-1"
    assert [o["status"] for o in caller.sim.ledger()] == ["OPEN"]  # in the ledger once
    assert caller.ok("GET", "strategy_trade", orderRef="mr-late-1")["count"] == 1
    assert caller.sim.stats()["faults_injected"] == {"late_exec": 1}


@pytest.mark.slow
def test_late_exec_held_reply_comes_late_and_stop_is_not_blocked(sim_factory) -> None:
    caller = SimCaller(sim_factory()).login()
    caller.sim.set_faults(late_exec_rate=1.0, late_exec_s=30, late_exec_ack=1.0)
    caller.timeout = 0.3
    with pytest.raises(requests.exceptions.ReadTimeout):
        caller.post("open_order", **ORDER)
    caller.timeout = 10.0
    assert caller.opened() == {}
    caller.sim.advance(31)
    assert len(wait_until(caller.opened)) == 1
    started = time.monotonic()
    caller.sim.stop()
    assert time.monotonic() - started < 2.0


@pytest.mark.slow
def test_late_exec_short_hold_answers_after_the_delay(sim_factory) -> None:
    caller = SimCaller(sim_factory()).login()
    caller.sim.set_faults(late_exec_rate=1.0, late_exec_s=0.3, late_exec_ack=1.0)
    started = time.monotonic()
    reply = caller.post("open_order", **ORDER)
    assert time.monotonic() - started >= 0.3
    assert reply.status_code == 200
    caller.sim.set_faults(late_exec_rate=0.0)
    caller.wait_open(str(reply.json()["tradeID"]))


def test_late_exec_spares_refused_orders_and_other_endpoints(sim_factory) -> None:
    caller = SimCaller(sim_factory()).login()
    caller.sim.set_faults(late_exec_rate=1.0, refuse_after_exec_rate=0.0, late_exec_ack=0.0)
    assert caller.post("open_order", instrument="NOPE").status_code == 400
    assert caller.get("opened_trades").status_code == 200
    assert caller.sim.ledger() == [] and caller.sim.stats()["faults_injected"] == {}


def test_refuse_after_exec_executes_then_answers_a_token_refusal(sim_factory) -> None:
    caller = SimCaller(sim_factory()).login()
    caller.sim.set_faults(refuse_after_exec_rate=1.0)
    reply = caller.post("open_order", orderRef="mr-r-1", **ORDER)
    assert reply.status_code == 401 and reply.json() == {
        "status": "FAIL",
        "err_msg": "token revoked",
    }
    assert caller.get("opened_trades").status_code == 401  # the token stays dead
    caller.login()
    caller.sim.set_faults(refuse_after_exec_rate=0.0)
    ledger = caller.sim.ledger()
    assert len(ledger) == 1 and ledger[0]["orderRef"] == "mr-r-1"
    caller.wait_open(str(ledger[0]["tradeID"]))
    assert caller.sim.stats()["faults_injected"] == {"refuse_after_exec": 1}


def test_one_token_per_user_revokes_the_users_earlier_token(sim_factory) -> None:
    sim = sim_factory(faults={"one_token_per_user": True})
    first = SimCaller(sim).login()
    other = SimCaller(sim, user="bob", api_key="bob-key").login()
    second = SimCaller(sim, accountid="ACC-2").login()
    refused = first.get("balance")
    assert refused.status_code == 401 and "token" in refused.json()["err_msg"]
    assert second.get("balance").status_code == 200
    assert other.get("balance").status_code == 200  # another user keeps his
    assert sim.stats()["tokens_replaced"] == 1


def test_one_token_per_user_is_off_by_default_and_set_at_run_time(sim) -> None:
    first, second = SimCaller(sim).login(), SimCaller(sim).login()
    assert first.get("balance").status_code == 200 and second.get("balance").status_code == 200
    url = sim.root_url + "/sim/faults"
    assert requests.post(url, data=json.dumps({"one_token_per_user": True})).status_code == 200
    third = SimCaller(sim).login()
    assert first.get("balance").status_code == 401 and second.get("balance").status_code == 401
    assert third.get("balance").status_code == 200
    bad = requests.post(url, data=json.dumps({"one_token_per_user": "yes"}))
    assert bad.status_code == 400
    assert sim.set_faults(one_token_per_user=False)["one_token_per_user"] is False
    SimCaller(sim).login()
    assert third.get("balance").status_code == 200


def test_misleading_kinds_keep_the_seeded_draws(sim_factory) -> None:
    faults = {"error_rate": 0.3, "drop_rate": 0.2}
    before = outcomes(sim_factory(seed=5, faults=faults))
    misleading = {"partial_listing_rate": 0.2, "late_exec_rate": 0.1, "missing_ref_rate": 0.1}
    assert before == outcomes(sim_factory(seed=5, faults={**faults, **misleading}))
    for bad in ({"late_exec_s": 31.0}, {"late_exec_ack": 2.0}, {"partial_listing_rate": 1.5}):
        with pytest.raises(ValueError):
            FaultSettings(**bad)


def test_cli_options_take_the_new_kinds() -> None:
    base = {
        "host": "127.0.0.1",
        "port": "0",
        "token_ttl": "60",
        "seed": "1",
        "accounts": None,
        "fill_delay_ms": "20",
    }
    config = config_from_options(
        **base,
        partial_listing_rate="0.1",
        missing_ref_rate="0.2",
        late_exec_rate="0.3",
        late_exec_s="25",
        late_exec_ack="1",
        refuse_after_exec_rate="0.05",
        one_token_per_user=True,
    )
    f = config.faults
    assert (f.partial_listing_rate, f.missing_ref_rate, f.late_exec_rate) == (0.1, 0.2, 0.3)
    assert (f.late_exec_s, f.late_exec_ack, f.refuse_after_exec_rate) == (25, 1, 0.05)
    assert f.one_token_per_user is True
    assert config_from_options(**base).faults == FaultSettings()
    with pytest.raises(UsageError, match="--late-exec-s"):
        config_from_options(**base, late_exec_s="31")


@pytest.mark.process
def test_sim_process_takes_the_new_flags() -> None:
    from tests.sim.test_cli import run_sim

    proc = run_sim(
        "--port", "0", "--one-token-per-user", "--late-exec-rate", "0.5", "--late-exec-s", "5",
        "--partial-listing-rate", "0.1", "--missing-ref-rate", "0.1",
        "--refuse-after-exec-rate", "0.1", "--late-exec-ack", "0",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        faults = requests.get(url.replace("/rest/v1", "/sim/faults"), timeout=5).json()
        assert faults["one_token_per_user"] is True and faults["late_exec_s"] == 5
        assert faults["late_exec_rate"] == 0.5 and faults["late_exec_ack"] == 0
        assert faults["refuse_after_exec_rate"] == 0.1 and faults["missing_ref_rate"] == 0.1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.communicate(timeout=5)
    bad = run_sim("--port", "0", "--late-exec-s", "31")
    assert bad.wait(timeout=10) == 2
    assert "--late-exec-s" in bad.communicate(timeout=5)[1]
