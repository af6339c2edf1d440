"""The wire (http.client) keeps every behaviour of the pool path: TLS verification, body
decoding, connection reuse and its limits, timeouts and typed errors.

The deadline, the size cap and the gzip bomb go through the wire too (it is the default
path): tests/api/test_request_deadline.py.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import random
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from multirun.api.transport import HttpTransport, NotConnected, RequestSender
from multirun.api.wire import read_headers
from multirun.core.clock import SYSTEM_CLOCK
from multirun.core.errors import NetworkError

TLS = Path(__file__).parent / "tls"  # a self-signed certificate for 127.0.0.1 (test only)
REPLY = {"res": "ok", "pad": "x" * 300}


class Replier(BaseHTTPRequestHandler):
    """Answers by path: ``/gzip``, ``/deflate``, ``/rawdeflate`` (encoded bodies),
    ``/close`` (``Connection: close``), ``/drop`` (keep-alive promised, then the
    connection closed), ``/silent`` (no reply for a while); anything else plain JSON."""

    peers: list[tuple[str, int]]

    def do_GET(self) -> None:
        self.peers.append(self.client_address)
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        if name == "silent":
            time.sleep(1.0)
            return
        body, headers = json.dumps(REPLY).encode(), {}
        if name == "gzip":
            body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
        elif name == "deflate":
            body, headers = zlib.compress(body), {"Content-Encoding": "deflate"}
        elif name == "rawdeflate":
            packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = packer.compress(body) + packer.flush()
            headers = {"Content-Encoding": "deflate"}
        elif name == "close":
            headers = {"Connection": "close"}
        self.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if name == "drop":
            self.close_connection = True  # closed though the reply said keep-alive

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(tls: bool) -> tuple[ThreadingHTTPServer, list[tuple[str, int]], str]:
    peers: list[tuple[str, int]] = []
    handler = type("Handler", (Replier,), {"peers": peers, "protocol_version": "HTTP/1.1"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(TLS / "localhost-cert.pem", TLS / "localhost-key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    scheme = "https" if tls else "http"
    return server, peers, f"{scheme}://127.0.0.1:{server.server_address[1]}/rest/v1"


@pytest.fixture(params=[False, True], ids=["http", "https"])
def replier(request: pytest.FixtureRequest) -> Iterator[tuple[list[tuple[str, int]], str]]:
    server, peers, url = serve(request.param)
    try:
        yield peers, url
    finally:
        server.shutdown()
        server.server_close()


def sender(url: str, *, verify: bool | str = str(TLS / "localhost-cert.pem"),
           wire_on: bool = True, read_timeout: float = 2.0) -> RequestSender:  # fmt: skip
    transport = HttpTransport(url)
    transport.http.session.verify = verify
    transport.http.wire = wire_on
    return RequestSender(
        url, connect_timeout=2.0, read_timeout=read_timeout,
        secrets=lambda: ["secret-key-0123456789"], clock=SYSTEM_CLOCK, rng=random.Random(1),
        transport=transport,
    )  # fmt: skip


def test_encoded_replies_are_decoded_and_the_connection_kept(replier: Any) -> None:
    peers, url = replier
    client = sender(url)
    try:
        for name in ("plain", "gzip", "deflate", "rawdeflate"):
            assert client.send("GET", name, {"api_key": "k"})[0] == REPLY, name
        http = client.transport.http  # type: ignore[attr-defined]
        assert http._wire is not None and http.pool().num_connections == 0  # the wire's
    finally:
        client.close()
    assert len(set(peers)) == 1  # one kept-alive connection for all four


def test_a_closed_or_dropped_connection_is_not_reused(replier: Any) -> None:
    """``Connection: close``, or a server closing a kept-alive connection while it is
    idle: the next request goes out on a new connection and succeeds (a write sent
    into a dead connection would be an order of unknown fate)."""
    peers, url = replier
    client = sender(url)
    try:
        for name in ("close", "plain", "drop", "plain"):
            assert client.send("GET", name, {})[0] == REPLY, name
            time.sleep(0.02)  # the server's close reaches the idle socket
    finally:
        client.close()
    assert peers[0] != peers[1] and peers[1] == peers[2] != peers[3]


def test_tls_is_verified_against_the_configured_ca() -> None:
    server, _peers, url = serve(tls=True)
    try:
        errors = []
        for wire_on in (True, False):  # the default CA bundle does not know our certificate
            client = sender(url, verify=True, wire_on=wire_on)
            with pytest.raises(NetworkError) as info:
                client.send("GET", "plain", {"api_key": "secret-key-0123456789"})
            client.close()
            errors.append((type(info.value).__name__, str(info.value)))
        assert errors[0] == errors[1] == ("NetworkError", "plain: connection failed or dropped")
        client = sender(url, verify=False)  # verification off, as requests' verify=False
        assert client.send("GET", "plain", {})[0] == REPLY
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_silent_server_is_a_read_timeout_and_a_refused_connect_sent_nothing() -> None:
    server, _peers, url = serve(tls=False)
    try:
        client = sender(url, read_timeout=0.2)
        with pytest.raises(NetworkError, match=r"^silent: no reply within 0.2 s$"):
            client.send("GET", "silent", {})
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    client = sender(url)  # the server is gone: connections are refused
    with pytest.raises(NotConnected, match="nothing sent"):
        client.send("POST", "open_order", {"api_key": "secret-key-0123456789"})
    client.close()


def test_headers_are_read_as_the_email_parser_reads_them() -> None:
    raw = (b"Content-Type: application/json\r\nX-Note: first\r\nx-note: second\r\n"
           b"X-Folded: one\r\n  two\r\nDate: Mon, 07 Dec 2026 15:00:00 GMT\r\n"
           b"\r\nbody")  # fmt: skip
    ours = read_headers(io.BytesIO(raw))
    theirs = http.client.parse_headers(io.BytesIO(raw))
    for name in ("content-type", "X-NOTE", "Date", "x-folded", "absent"):
        assert ours.get(name) == (theirs.get(name) and " ".join(theirs[name].split())), name
    assert ours.get("absent", "") == ""


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"X: " + b"a" * 70_000 + b"\r\n\r\n", http.client.LineTooLong),
        (b"".join(b"X-%d: 1\r\n" % n for n in range(101)) + b"\r\n", http.client.HTTPException),
    ],
    ids=["long line", "too many"],
)
def test_header_limits_are_http_clients(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_headers(io.BytesIO(raw))
