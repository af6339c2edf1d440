"""Malformed and extreme requests get the API's error reply; the simulator stays healthy."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from multirun.core.errors import UsageError
from multirun.sim.options import config_from_options
from tests.conftest import SimCaller
from tests.sim.test_cli import DEFAULTS


def fail_reply(reply: requests.Response, status: int) -> str:
    """The err_msg of an API error reply with ``status``."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["status"] == "FAIL" and body["err_msg"]
    return body["err_msg"]


def test_a_number_beyond_float_is_a_400_not_a_500(caller) -> None:
    reply = caller.post(
        "open_order", instrument="BTCUSD", buysell="BUY", volume=10**400, ordertype="MKT"
    )
    assert "volume" in fail_reply(reply, 400)


def test_a_deeply_nested_body_is_a_400_not_a_dropped_connection(sim) -> None:
    fail_reply(requests.post(sim.base_url + "/open_order", data="[" * 200_000), 400)


def test_a_get_with_a_body_leaves_the_kept_alive_connection_usable(sim) -> None:
    with requests.Session() as session:
        first = session.get(sim.base_url + "/list_instrument", data='{"x": 1}')
        second = session.get(sim.base_url + "/list_instrument")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()


def test_a_chunked_body_is_read_whole_and_the_connection_stays_usable(caller) -> None:
    order = {"instrument": "BTCUSD", "buysell": "BUY", "volume": 1, "ordertype": "MKT"}
    body = json.dumps(caller._params(order)).encode()
    with requests.Session() as session:
        reply = session.post(caller.sim.base_url + "/open_order", data=iter([body[:9], body[9:]]))
        assert reply.status_code == 200 and reply.json()["status"] == "PENDING_TO_FILL"
        assert session.get(caller.sim.base_url + "/list_instrument").status_code == 200


def test_http_level_refusals_are_json_too(sim) -> None:
    assert fail_reply(requests.patch(sim.base_url + "/open_order"), 501)
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(b"GET /rest/v1/list_instrument HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
        raw = b""
        while chunk := sock.recv(4096):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431") and b"application/json" in head
    assert json.loads(body)["status"] == "FAIL"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sim/clock", '{"advance_s": NaN}'),
        ("/sim/clock", '{"advance_s": Infinity}'),
        ("/sim/clock", '{"advance_s": 1e300}'),
        ("/sim/clock", '{"advance_s": 1' + "0" * 400 + "}"),
        ("/sim/price", '{"instrument": "BTCUSD", "mid": NaN}'),
        ("/sim/price", '{"instrument": "BTCUSD", "mid": Infinity}'),
        ("/sim/price", '{"instrument": "BTCUSD", "mid": 1' + "0" * 400 + "}"),
        ("/sim/faults", '{"latency_ms": Infinity}'),
        ("/sim/faults", '{"error_rate": NaN}'),
        ("/sim/faults", '{"slow_success_ms": 1e12}'),
    ],
)
def test_controls_refuse_values_that_would_break_the_simulator(sim, path: str, body: str) -> None:
    fail_reply(requests.post(sim.root_url + path, data=body, timeout=5), 400)
    assert sim.clock.offset == 0
    quote = requests.get(sim.base_url + "/realtime_price", params={"symbols": "BTCUSD"}, timeout=5)
    assert quote.status_code == 200 and 0 < quote.json()["res"]["BTCUSD"]["bidPrice"] < 1e9


def test_history_before_1970_is_a_400(sim) -> None:
    params = {"instrument": "BTCUSD", "interval": "D", "count": 1000, "timestamp": "0001-01-02"}
    reply = requests.get(sim.base_url + "/history_price", params=params, timeout=5)
    assert "timestamp" in fail_reply(reply, 400)


def test_a_rejected_update_changes_nothing_whichever_parameter_is_bad(caller) -> None:
    trade_id = caller.open()
    caller.wait_open(trade_id)
    reply = caller.post(
        "update_opened_order", tradeID=trade_id, takeProfitLevel=99_999, orderRef=[1]
    )
    assert "orderRef" in fail_reply(reply, 400)
    assert caller.opened()[trade_id]["takeProfitLevel"] == 0.0


def test_cancel_without_trade_ids_names_the_missing_parameter(caller) -> None:
    assert fail_reply(caller.post("cancel_orders"), 400) == "missing parameter: tradeIDs"


def test_revoke_faults_spare_tokens_sent_to_token_free_endpoints(sim_factory) -> None:
    sim = sim_factory()
    caller = SimCaller(sim).login()
    sim.set_faults(revoke_rate=1.0)
    assert caller.get("realtime_price", symbols="BTCUSD").status_code == 200
    assert caller.get("session").status_code == 200
    sim.set_faults(revoke_rate=0.0)
    assert caller.get("balance").status_code == 200
    assert sim.stats()["faults_injected"] == {}


@pytest.mark.parametrize(
    ("flag", "value"),
    [("latency_ms", "inf"), ("slow_success_ms", "1e12"), ("token_ttl", "1e300")],
)
def test_flags_that_would_overflow_are_usage_errors(flag: str, value: str) -> None:
    with pytest.raises(UsageError, match="--" + flag.replace("_", "-")):
        config_from_options(**{**DEFAULTS, flag: value})
