"""The client's total deadline per request, reply size cap, interrupts and heartbeat.

Against the real simulator with its ``trickle`` (reply written a byte at a time) and
``huge`` (gzip bomb) faults, plus a tiny raw server whose headers come at once and whose
body trickles (the simulator trickles everything). The simulator's ledger judges
duplicates. Deadlines are short so each test takes about a second.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from multirun.api.client import AlgogeneClient
from multirun.api.transport import RequestSender
from multirun.core.clock import SYSTEM_CLOCK
from multirun.core.errors import (
    Interrupted,
    NetworkError,
    OrderUncertain,
    ProtocolError,
    ServerError,
)
from multirun.core.redact import Secret
from multirun.sim import SimServer
from tests.conftest import SimFactory

API_KEY = "sim-key-deadline-0123456789"
DEADLINE_S = 0.6
MARGIN_S = 0.4  # a call cut by its deadline ends within DEADLINE_S + this


def make_client(url: str, account: str = "ACC-D", **kwargs: Any) -> AlgogeneClient:
    options: dict[str, Any] = dict(
        connect_timeout=0.5,
        read_timeout=0.5,  # per socket read: a trickle never trips it
        read_budget_s=DEADLINE_S,
        reconcile_window_s=0.3,
        request_deadline_s=DEADLINE_S,
    )
    return AlgogeneClient(url, "alice", Secret(API_KEY), "livetest", account, **(options | kwargs))


def trickling_sim(sim_factory: SimFactory, endpoints: list[str], ms: float = 100.0) -> SimServer:
    faults = {"trickle_rate": 1.0, "trickle_ms": ms, "endpoints": endpoints}
    return sim_factory(seed=5, faults=faults)


@pytest.mark.slow
def test_a_trickling_reply_is_cut_at_the_deadline_headers_included(sim_factory) -> None:
    # 100 ms a byte: the status line alone takes 1.7 s, so the cut comes in the headers
    sim = trickling_sim(sim_factory, ["balance"])
    with make_client(sim.base_url) as client:
        client.accounts()  # token and connection ready: only the balance call is timed
        start = time.monotonic()
        with pytest.raises(NetworkError, match="request deadline"):
            client.balance()
        took = time.monotonic() - start
    assert DEADLINE_S * 0.9 <= took < DEADLINE_S + MARGIN_S, took
    assert sim.stats()["faults_injected"].get("trickle", 0) >= 1


@contextlib.contextmanager
def raw_server(head: bytes, body: bytes, pace_s: float = 0.0) -> Iterator[str]:
    """A server answering each request (one connection each) with ``head`` at once,
    then ``body`` (a byte per ``pace_s`` if > 0); yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(head)
                    if not pace_s:
                        conn.sendall(body)
                    for i in range(len(body) if pace_s else 0):
                        conn.sendall(body[i : i + 1])
                        if stop.wait(pace_s):
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/rest/v1"
    finally:
        stop.set()
        with contextlib.suppress(OSError):  # wake a blocked accept()
            socket.create_connection(listener.getsockname(), timeout=1).close()
        thread.join(5)
        listener.close()


def body_trickler(pace_s: float) -> contextlib.AbstractContextManager[str]:
    body = b'{"NAV": 1.0, "available_Balance": 1.0}' * 10
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return raw_server(head, body, pace_s)


@pytest.mark.slow
def test_a_body_trickling_after_prompt_headers_is_cut_at_the_deadline() -> None:
    with body_trickler(0.05) as url, make_client(url) as client:
        start = time.monotonic()
        with pytest.raises(NetworkError, match="request deadline"):
            client.realtime_price("BTCUSD")  # no token needed: one request
        took = time.monotonic() - start
    assert took < DEADLINE_S + MARGIN_S, took


@pytest.mark.slow
def test_an_order_whose_reply_trickles_is_reconciled_not_resent(sim_factory) -> None:
    sim = trickling_sim(sim_factory, ["open_order"])
    refs = [f"mr-ACC-T-{i}" for i in range(3)]
    with make_client(sim.base_url, "ACC-T", read_budget_s=5.0) as client:
        for ref in refs:
            start = time.monotonic()
            ack = client.open_order("EURUSD", "BUY", 0.01, ref)
            assert time.monotonic() - start < DEADLINE_S + 3.0
            assert ack.order_ref == ref
    ledger = [o for o in sim.ledger() if o["accountid"] == "ACC-T"]
    assert sorted(o["orderRef"] for o in ledger) == refs  # each exactly once
    assert sim.stats()["requests"]["open_order"] == len(refs)  # never sent again


def test_a_huge_reply_from_the_simulator_is_a_protocol_error(sim_factory) -> None:
    # One request through the transport: the client would retry it within its read budget,
    # and which error ends a retried read depends on the machine's load; this is about the cap.
    sim = sim_factory(
        seed=5, faults={"huge_rate": 1.0, "huge_mb": 8, "endpoints": ["realtime_price"]}
    )
    transport = RequestSender(
        sim.base_url, connect_timeout=5.0, read_timeout=20.0, request_deadline_s=20.0,
        secrets=lambda: [API_KEY], clock=SYSTEM_CLOCK, rng=random.Random(1),
    )  # fmt: skip
    payload = {"user": "alice", "api_key": API_KEY, "symbols": "BTCUSD"}
    with pytest.raises(ProtocolError, match="larger than 4194304 bytes"):
        try:
            transport.send("GET", "realtime_price", payload)
        finally:
            transport.close()
    assert sim.stats()["faults_injected"]["huge"] == 1


@pytest.mark.slow
def test_a_gzip_bomb_is_refused_in_bounded_memory() -> None:
    body = gzip.compress(b"{" + b" " * (64 << 20) + b"}")  # 64 MiB in ~64 KiB
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with raw_server(head, body) as url, make_client(url, request_deadline_s=10.0) as client:
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match="larger than 4194304 bytes"):
                client.realtime_price("BTCUSD")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 12 * 1024 * 1024, peak  # the cap plus a chunk or two, not 64 MiB


@pytest.mark.slow
def test_a_small_cap_refuses_a_plain_oversized_reply(sim) -> None:
    client = make_client(sim.base_url, max_reply_bytes=64)
    with client, pytest.raises(ProtocolError, match="larger than 64 bytes"):
        client.history_price("BTCUSD", "M", 50)


@pytest.mark.slow
def test_interrupt_ends_the_wait_within_half_a_second(sim_factory) -> None:
    sim = sim_factory(seed=5, faults={"error_rate": 1.0, "endpoints": ["balance"]})
    stop = threading.Event()
    set_at: list[float] = []

    def set_stop() -> None:
        set_at.append(time.monotonic())
        stop.set()

    with make_client(sim.base_url, read_budget_s=30.0, interrupt=stop) as client:
        client.accounts()
        timer = threading.Timer(0.5, set_stop)
        timer.start()
        start = time.monotonic()
        with pytest.raises(Interrupted):
            client.balance()
        ended = time.monotonic()
        timer.join()
    assert ended - set_at[0] < 0.5, ended - set_at[0]
    assert ended - start < 1.5


def test_interrupting_false_lets_retries_run_their_course(sim_factory) -> None:
    sim = sim_factory(seed=5, faults={"error_rate": 1.0, "endpoints": ["balance"]})
    stop = threading.Event()
    stop.set()
    with make_client(sim.base_url, read_budget_s=0.5, interrupt=stop) as client:
        with client.interrupting(False), pytest.raises(ServerError):
            client.balance()
        with pytest.raises(Interrupted):
            client.balance()
    assert sim.stats()["requests"]["balance"] >= 3


@pytest.mark.slow
def test_interrupt_while_reconciling_an_order_leaves_it_uncertain(sim_factory) -> None:
    # open_order's reply trickles past its deadline, a stop request comes meanwhile and
    # the listings fail: the order stays uncertain (journaled as an intent), never resent
    faults = {"trickle_rate": 1.0, "trickle_ms": 100.0, "endpoints": ["open_order"]}
    sim = sim_factory(seed=5, faults=faults)
    stop = threading.Event()
    with make_client(sim.base_url, "ACC-U", read_budget_s=30.0, interrupt=stop) as client:
        client.accounts()

        def break_listings_then_stop() -> None:  # while open_order's reply trickles
            sim.set_faults(error_rate=1.0, trickle_rate=0.0, endpoints=[])
            stop.set()  # the request in flight runs on to its deadline

        timer = threading.Timer(DEADLINE_S * 0.5, break_listings_then_stop)
        timer.start()
        with pytest.raises(OrderUncertain, match="stop request"):
            client.open_order("EURUSD", "BUY", 0.01, "mr-ACC-U-1")
        timer.join()
    assert sim.stats()["requests"]["open_order"] == 1
    assert [o["orderRef"] for o in sim.ledger() if o["accountid"] == "ACC-U"] == ["mr-ACC-U-1"]


def test_the_heartbeat_is_called_before_every_request(sim) -> None:
    beats: list[float] = []
    with make_client(sim.base_url, heartbeat=lambda: beats.append(time.monotonic())) as client:
        client.balance()
        client.opened_trades()
    requests = sum(sim.stats()["requests"].values())
    assert len(beats) == requests == 3  # session, balance, opened_trades


def test_a_failing_heartbeat_does_not_stop_a_request(sim) -> None:
    def broken() -> None:
        raise OSError("read-only state dir")

    with make_client(sim.base_url, heartbeat=broken) as client:
        assert client.balance().nav > 0


def test_is_retryable_names_every_failure_worth_repeating() -> None:
    from multirun.api.transport import is_retryable
    from multirun.core.errors import (
        AuthError,
        CloseUnconfirmed,
        OrderRejected,
        RateLimitError,
        RequestRejected,
    )

    yes = [
        NetworkError("x"), ServerError("x", status=503), RateLimitError("x", status=429),
        ProtocolError("x"), CloseUnconfirmed("x"),
        AuthError("x", endpoint="close_orders", status=401),
        AuthError("x", endpoint="opened_trades", status=200),
    ]  # fmt: skip
    no = [
        AuthError("x", endpoint="session", status=401),
        AuthError("x", endpoint="balance", status=403),
        OrderRejected("x"), RequestRejected("x"), OrderUncertain("x"), Interrupted("x"),
        ValueError("x"),
    ]  # fmt: skip
    assert all(is_retryable(e) for e in yes)
    assert not any(is_retryable(e) for e in no)


@pytest.mark.slow
def test_a_trickled_reply_logs_no_traceback(sim_factory, caplog) -> None:
    """urllib3 logs headers it could not parse with a traceback: it is one debug line."""
    sim = trickling_sim(sim_factory, ["balance"], ms=5.0)  # cut inside the headers
    caplog.set_level(logging.DEBUG)
    with make_client(sim.base_url) as client:
        client.accounts()
        with pytest.raises(NetworkError):
            client.balance()
    noisy = [r for r in caplog.records if r.name.startswith("urllib3")]
    assert all(r.exc_info is None and r.levelno == logging.DEBUG for r in noisy), noisy
    assert "Traceback" not in caplog.text
