"""Fault injection: every kind, run-time control, seeding, and /sim/ being exempt."""

from __future__ import annotations

import json
import time

import pytest
import requests

from multirun.sim import FaultSettings
from tests.conftest import SimCaller

ORDER = {"instrument": "BTCUSD", "buysell": "BUY", "volume": 0.1, "ordertype": "MKT"}


def faulty(sim_factory, **faults) -> SimCaller:
    """A logged-in caller on a fresh simulator whose faults are switched on after login."""
    sim = sim_factory()
    caller = SimCaller(sim).login()
    sim.set_faults(**faults)
    return caller


def test_error_replies_5xx_and_executes_nothing(sim_factory) -> None:
    caller = faulty(sim_factory, error_rate=1.0)
    reply = caller.post("open_order", **ORDER)
    assert reply.status_code in (500, 502, 503, 504)
    assert reply.json() == {"status": "FAIL", "err_msg": "simulated server error"}
    assert caller.sim.ledger() == []
    assert caller.sim.stats()["faults_injected"] == {"error": 1}


def test_drop_closes_the_connection_and_executes_nothing(sim_factory) -> None:
    caller = faulty(sim_factory, drop_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        caller.post("open_order", **ORDER)
    assert caller.sim.ledger() == []
    assert caller.sim.stats()["faults_injected"] == {"drop": 1}


def test_malformed_reply_is_not_json_but_the_order_is_executed(sim_factory) -> None:
    caller = faulty(sim_factory, malformed_rate=1.0)
    reply = caller.post("open_order", **ORDER)
    assert reply.status_code == 200
    with pytest.raises(ValueError):
        reply.json()
    assert len(caller.sim.ledger()) == 1


def test_malformed_does_not_garble_error_replies(sim_factory) -> None:
    caller = faulty(sim_factory, malformed_rate=1.0)
    reply = caller.post("open_order", instrument="NOPE")
    assert reply.status_code == 400 and reply.json()["status"] == "FAIL"


def test_revoke_revokes_the_callers_token(sim_factory) -> None:
    caller = faulty(sim_factory, revoke_rate=1.0)
    reply = caller.post("open_order", **ORDER)
    assert reply.status_code == 401 and reply.json()["err_msg"] == "token revoked"
    assert caller.sim.ledger() == []
    caller.sim.set_faults(revoke_rate=0.0)
    assert caller.get("balance").status_code == 401  # it stays revoked
    caller.login()  # sessions carry no token: revoke never hits them
    assert caller.get("balance").status_code == 200
    assert caller.sim.stats()["faults_injected"] == {"revoke": 1}


def test_revoke_spares_calls_without_a_token(sim_factory) -> None:
    sim = sim_factory(faults={"revoke_rate": 1.0})
    assert requests.get(sim.base_url + "/list_instrument").status_code == 200
    assert SimCaller(sim).login().token
    assert sim.stats()["faults_injected"] == {}


@pytest.mark.slow
def test_slow_success_executes_holds_the_reply_and_does_not_block_stop(sim_factory) -> None:
    caller = faulty(sim_factory, slow_success_rate=1.0, slow_success_ms=60_000)
    caller.timeout = 0.3
    with pytest.raises(requests.exceptions.ReadTimeout):
        caller.post("open_order", **ORDER)
    assert len(caller.sim.ledger()) == 1  # executed: the case that tempts a resend
    started = time.monotonic()
    caller.sim.stop()
    assert time.monotonic() - started < 2.0


def test_slow_success_reply_arrives_after_the_hold(sim_factory) -> None:
    caller = faulty(sim_factory, slow_success_rate=1.0, slow_success_ms=150)
    started = time.monotonic()
    reply = caller.post("open_order", **ORDER)
    assert time.monotonic() - started >= 0.15
    assert reply.status_code == 200 and reply.json()["status"] == "PENDING_TO_FILL"


def test_latency_and_jitter_delay_replies(sim_factory) -> None:
    caller = faulty(sim_factory, latency_ms=150, jitter_ms=50)
    started = time.monotonic()
    assert caller.get("balance").status_code == 200
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.5
    assert caller.sim.stats()["faults_injected"] == {"latency": 1}


def test_sim_endpoints_are_never_faulted(sim_factory) -> None:
    sim = sim_factory(faults={"error_rate": 0.5, "drop_rate": 0.5, "latency_ms": 5000})
    for path in ("/sim/ledger", "/sim/stats", "/sim/faults", "/sim/clock"):
        assert requests.get(sim.root_url + path, timeout=2).status_code == 200


def test_post_sim_faults_changes_only_the_given_fields(sim) -> None:
    url = sim.root_url + "/sim/faults"
    assert requests.get(url).json() == FaultSettings().to_dict()
    requests.post(url, data=json.dumps({"error_rate": 0.2}))
    reply = requests.post(url, data=json.dumps({"latency_ms": 5}))
    assert reply.status_code == 200
    assert reply.json()["error_rate"] == 0.2 and reply.json()["latency_ms"] == 5
    assert sim.set_faults(error_rate=0.0)["latency_ms"] == 5
    assert requests.get(url).json() == sim.faults()


@pytest.mark.parametrize(
    "body",
    [{"error_rate": 2}, {"drop_rate": -0.1}, {"latency_ms": "x"}, {"bogus": 1}, {"endpoints": 5}],
)
def test_post_sim_faults_rejects_bad_values(sim, body) -> None:
    reply = requests.post(sim.root_url + "/sim/faults", data=json.dumps(body))
    assert reply.status_code == 400 and reply.json()["status"] == "FAIL"
    assert sim.faults() == FaultSettings().to_dict()


def outcomes(sim, n: int = 40) -> list[int]:
    result = []
    for _ in range(n):
        try:
            result.append(requests.get(sim.base_url + "/list_instrument", timeout=5).status_code)
        except requests.exceptions.ConnectionError:
            result.append(0)
    return result


def test_faults_are_reproducible_from_the_seed(sim_factory) -> None:
    faults = {"error_rate": 0.3, "drop_rate": 0.2, "malformed_rate": 0.2}
    first = outcomes(sim_factory(seed=5, faults=faults))
    assert first == outcomes(sim_factory(seed=5, faults=faults))
    assert first != outcomes(sim_factory(seed=6, faults=faults))
    assert {0, 200} <= set(first) and set(first) & {500, 502, 503, 504}


def test_fault_settings_validate() -> None:
    with pytest.raises(ValueError):
        FaultSettings(error_rate=1.5)
    with pytest.raises(ValueError):
        FaultSettings(latency_ms=-1)
    assert FaultSettings().slow_success_ms == 30_000


def test_faults_can_target_chosen_endpoints(sim_factory) -> None:
    caller = faulty(sim_factory, error_rate=1.0, endpoints=["open_order"])
    assert caller.get("opened_trades").status_code == 200
    assert caller.post("open_order", **ORDER).status_code >= 500
    reply = requests.post(caller.sim.root_url + "/sim/faults", data=json.dumps({"endpoints": []}))
    assert reply.json()["endpoints"] == [] and reply.json()["error_rate"] == 1.0
    assert caller.get("opened_trades").status_code >= 500
    bad = requests.post(caller.sim.root_url + "/sim/faults", data=json.dumps({"endpoints": "x"}))
    assert bad.status_code == 400


@pytest.mark.slow
def test_trickle_executes_and_writes_the_reply_a_byte_at_a_time(sim_factory) -> None:
    import socket

    caller = faulty(sim_factory, trickle_rate=1.0, trickle_ms=5, endpoints=["open_order"])
    body = json.dumps({**caller._params({}), **ORDER}).encode()
    with socket.create_connection(("127.0.0.1", caller.sim.port), timeout=5) as sock:
        sock.sendall(
            b"POST /rest/v1/open_order HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        first = sock.recv(100)
        start = time.monotonic()
        received = first
        while chunk := sock.recv(100):
            received += chunk
        took = time.monotonic() - start
    assert len(first) <= 3  # the status line too comes byte by byte (a slow reader: a few)
    head, _, reply = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and "tradeID" in json.loads(reply)
    assert took >= (len(received) - len(first) - 1) * 0.005 * 0.9
    assert len(caller.sim.ledger()) == 1  # executed
    assert caller.sim.stats()["faults_injected"] == {"trickle": 1}


def test_huge_pads_the_reply_and_gzips_it(sim_factory) -> None:
    caller = faulty(sim_factory, huge_rate=1.0, huge_mb=2)
    reply = caller.get("opened_trades")  # requests decompresses it
    assert reply.headers["Content-Encoding"] == "gzip"
    assert int(reply.headers["Content-Length"]) < 64 * 1024
    assert len(reply.content) == 2 * 1024 * 1024 and reply.json()["count"] == 0
    assert caller.sim.stats()["faults_injected"] == {"huge": 1}


def test_new_fault_kinds_keep_the_seeded_draws(sim_factory) -> None:
    faults = {"error_rate": 0.3, "drop_rate": 0.2, "malformed_rate": 0.2}
    before = outcomes(sim_factory(seed=5, faults=faults))
    assert before == outcomes(sim_factory(seed=5, faults={**faults, "trickle_ms": 5.0}))
    with pytest.raises(ValueError):
        FaultSettings(trickle_rate=2.0)
    with pytest.raises(ValueError):
        FaultSettings(huge_mb=5000.0)


def test_rate_limit_replies_429_with_retry_after_and_executes_nothing(sim_factory) -> None:
    caller = faulty(sim_factory, rate_limit_rate=1.0, retry_after_s=3600)
    reply = caller.post("open_order", **ORDER)
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "3600"
    assert reply.json()["status"] == "FAIL"
    assert caller.sim.ledger() == []
    assert caller.sim.stats()["faults_injected"] == {"rate_limit": 1}
    assert caller.sim.faults()["retry_after_s"] == 3600
    with pytest.raises(ValueError):
        FaultSettings(retry_after_s=-1)
