"""QuietHTTPServer: sleeps until a connection or its stop; a stop is prompt and cuts
the connections kept alive."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from multirun.core.httpserve import QuietHTTPServer


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive between requests

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


class Counting(QuietHTTPServer):
    turns = 0

    def service_actions(self) -> None:  # socketserver's hook: once per turn of the loop
        self.turns += 1


def test_it_sleeps_until_a_client_comes_and_stops_at_once_cutting_kept_connections() -> None:
    server = Counting(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    time.sleep(0.6)  # idle: the standard serve_forever would have turned (every 0.5 s)...
    assert server.turns == 0  # ...this one has not turned at all
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    for _ in range(2):  # the same connection twice: kept alive
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello"
    assert server.turns == 1  # one accept; the second request came on the same connection
    began = time.monotonic()
    server.shutdown()
    server.close_connections()
    assert time.monotonic() - began < 1.0
    thread.join(timeout=5)
    assert not thread.is_alive()
    conn.request("GET", "/")  # the kept connection was cut: no answer on it
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.getresponse()
    server.server_close()
    server.shutdown()  # again, after close: returns, touches no descriptor
    conn.close()


def test_an_ipv6_literal_is_served_over_ipv6() -> None:
    import socket

    try:
        server = QuietHTTPServer(("::1", 0), Hello)
    except OSError:
        pytest.skip("no IPv6 on this host")
    assert server.address_family == socket.AF_INET6
    server.server_close()
