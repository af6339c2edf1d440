"""The transport's hot path: http.client's wire, or the urllib3 pool of requests' adapter.

Each must send what requests would send (request line, headers, body) and fail as
requests would (the same typed errors, with the same messages), and step aside for
proxies and for a replaced adapter (the ``responses`` mock of the unit tests).
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import responses
import urllib3

from multirun.api.http_session import HttpSession, environment_settings, http_session, query_string
from multirun.api.transport import HttpTransport, Json, RequestSender
from multirun.core.clock import SYSTEM_CLOCK
from multirun.core.errors import ApiError


class Recorder(BaseHTTPRequestHandler):
    """Records each request (line, headers, body) and answers a small JSON object."""

    seen: list[dict[str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.seen.append({"line": self.requestline, "headers": headers, "body": body,
                          "peer": self.client_address})  # fmt: skip
        reply = json.dumps({"res": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (Recorder,), {"seen": seen, "protocol_version": "HTTP/1.1"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # a short poll: serve_forever checks for shutdown every poll_interval (0.5 s by default)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/rest/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def wire(sender: RequestSender) -> HttpTransport:
    assert isinstance(sender.transport, HttpTransport)
    return sender.transport


# (direct, wire): http.client's wire, urllib3's pool, requests' Session
PATHS = [(True, True), (True, False), (False, False)]


def transport(url: str, *, direct: bool = True, wire_on: bool = True) -> RequestSender:
    http = HttpTransport(url)
    http.http.direct = direct
    http.http.wire = wire_on
    return RequestSender(
        url, connect_timeout=1.0, read_timeout=1.0, secrets=lambda: ["secret-key-0123456789"],
        clock=SYSTEM_CLOCK, rng=random.Random(1), transport=http,
    )  # fmt: skip


PAYLOADS: list[Json] = [
    {"user": "alice", "api_key": "k-1", "token": "t/+= &?#%"},
    {"accountid": "ACC 1", "count": 3, "price": 97110.5, "flag": True},
    {"user": "émile", "note": "日本", "skip": None, "ids": ["1", "2"], "pair": ("a", "b")},
    {},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_query_string_is_the_one_requests_builds(payload: Json) -> None:
    url = "http://h.test/rest/v1/opened_trades"
    prepared = requests.Request("GET", url, params=payload).prepare().url
    ours = f"{url}?{query_string(payload)}" if query_string(payload) else url
    assert ours == prepared


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("payload", PAYLOADS[:3])
def test_both_paths_send_the_same_request(recorder: Any, method: str, payload: Json) -> None:
    url, seen = recorder
    for direct, wire_on in PATHS:
        client = transport(url, direct=direct, wire_on=wire_on)
        try:
            reply, _date = client.send(method, "opened_trades", payload)
        finally:
            client.close()
        assert reply == {"res": "ok"}
    fast, pooled, slow = seen
    for other in (pooled, slow):
        assert fast["line"] == other["line"]
        assert fast["body"] == other["body"]
        assert fast["headers"] == other["headers"]
    if method == "POST":
        sent = {k: list(v) if isinstance(v, tuple) else v for k, v in payload.items()}
        assert json.loads(fast["body"]) == sent
        assert fast["headers"]["content-type"] == "application/json"


def test_the_hot_path_bypasses_the_session_and_reuses_its_connection(
    recorder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = recorder

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Session.send called on the hot path")

    monkeypatch.setattr(requests.Session, "send", forbidden)
    for wire_on in (True, False):
        client = transport(url, wire_on=wire_on)
        try:
            for _ in range(3):
                assert client.send("GET", "balance", {"user": "alice"})[0] == {"res": "ok"}
            pool = wire(client).http.pool()
            assert pool is not None
            assert pool.num_connections == (0 if wire_on else 1)  # the wire's, or the pool's
        finally:
            client.close()
    assert len(seen) == 6
    assert len({r["peer"] for r in seen[:3]}) == 1  # the wire's one connection, kept alive


def test_a_proxy_or_a_replaced_adapter_goes_through_requests(recorder: Any) -> None:
    url, seen = recorder
    client = transport(url)
    try:
        wire(client).http.session.proxies["http"] = "http://proxy.test:3128"
        assert wire(client).http.pool() is None  # requests' proxy handling
        wire(client).http.session.proxies.clear()
        assert wire(client).http.pool() is not None
        with responses.RequestsMock() as mock:
            assert wire(client).http.pool() is None  # the unit tests' mock sees every request
            mock.get(f"{url}/balance", json={"res": "mocked"})
            assert client.send("GET", "balance", {})[0] == {"res": "mocked"}
    finally:
        client.close()
    assert seen == []


def test_a_refused_connection_is_not_connected_on_both_paths() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused
    errors = []
    for direct, wire_on in PATHS:
        client = transport(f"http://127.0.0.1:{port}/rest/v1", direct=direct, wire_on=wire_on)
        with pytest.raises(ApiError) as info:
            client.send("POST", "open_order", {"api_key": "secret-key-0123456789"})
        client.close()
        errors.append((type(info.value).__name__, str(info.value)))
    expected = ("NotConnected", "open_order: connection could not be made (nothing sent)")
    assert errors == [expected] * 3


RAW_FAILURES = [
    pytest.param(lambda pool: urllib3.exceptions.NewConnectionError(pool, "refused"), id="new"),
    pytest.param(
        lambda pool: urllib3.exceptions.NameResolutionError("h.test", pool, socket.gaierror()),
        id="dns",
    ),
    pytest.param(lambda pool: urllib3.exceptions.ConnectTimeoutError(pool, "slow"), id="ctimeout"),
    pytest.param(
        lambda pool: urllib3.exceptions.ReadTimeoutError(pool, "/", "slow"), id="rtimeout"
    ),
    pytest.param(lambda pool: ConnectionResetError("reset by peer"), id="reset"),
    pytest.param(lambda pool: urllib3.exceptions.ProtocolError("aborted"), id="protocol"),
    pytest.param(lambda pool: urllib3.exceptions.SSLError("bad handshake"), id="ssl"),
    pytest.param(lambda pool: urllib3.exceptions.LocationParseError("x"), id="other"),
]


@pytest.mark.parametrize("make", RAW_FAILURES)
def test_both_paths_fail_alike(recorder: Any, monkeypatch: pytest.MonkeyPatch, make: Any) -> None:
    """The same low-level failure (urllib3's own retry handling above it on both paths)
    is the same typed error with the same message (the wire's own: tests/api/test_wire.py)."""
    url, _seen = recorder

    def failing(pool: Any, *args: Any, **kwargs: Any) -> None:
        raise make(pool)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "_make_request", failing)
    errors = []
    for direct in (True, False):
        client = transport(url, direct=direct, wire_on=False)
        with pytest.raises(ApiError) as info:
            client.send("GET", "balance", {"api_key": "secret-key-0123456789"})
        client.close()
        errors.append((type(info.value).__name__, str(info.value)))
        assert "secret-key" not in str(info.value) and info.value.__cause__ is None
    assert errors[0] == errors[1]


def test_a_closed_transport_forgets_its_pool(recorder: Any) -> None:
    url, _seen = recorder
    client = transport(url)
    client.send("GET", "balance", {})
    client.close()
    assert wire(client).http._pool is None and wire(client).http._wire is None
    with contextlib.suppress(ApiError):  # a new pool, or a typed error: never a crash
        client.send("GET", "balance", {})
    client.close()


def test_on_the_wire_no_requests_session_is_built(recorder: Any) -> None:
    """A worker's requests go through http.client: building requests' Session, adapter
    and pool anyway copied ~1 MiB of the supervisor's pages into each worker."""
    url, seen = recorder
    client = transport(url)
    try:
        assert client.send("GET", "balance", {"user": "alice"})[0] == {"res": "ok"}
        assert wire(client).http._session is None and len(seen) == 1
    finally:
        client.close()


ENVIRONMENT = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
               "CURL_CA_BUNDLE", "http_proxy", "https_proxy", "all_proxy", "no_proxy")  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTP_PROXY": "http://proxy.test:3128"},
        {"HTTP_PROXY": "http://proxy.test:3128", "NO_PROXY": "127.0.0.1,localhost"},
        {"REQUESTS_CA_BUNDLE": "/etc/ssl/our-ca.pem"},
        {"CURL_CA_BUNDLE": "/etc/ssl/curl-ca.pem"},
    ],
)
def test_the_environment_is_read_as_requests_reads_it(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    base = "http://127.0.0.1:8765/rest/v1"
    session = http_session(base)
    try:
        assert environment_settings(base) == (session.proxies, session.verify)
    finally:
        session.close()
    sender = HttpSession(base)
    try:  # a proxy from the environment: through requests, never the wire
        assert (sender.wire_path() is None) == bool(session.proxies)
    finally:
        sender.close()
