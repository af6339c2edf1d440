"""The HTTP layer: a threading stdlib server that reads requests and writes replies.

GET parameters come from the query string; a POST body is parsed as JSON whatever
its Content-Type (the seed script posts ``json.dumps(...)`` as plain data), with a
form-encoded body accepted too. Query-string parameters of a POST are merged
under the body's. Nothing is logged per request: parameters carry secrets.

It speaks HTTP/1.1 with keep-alive, as a production API server does, so a client's
connection reuse (or the lack of it) shows in the benchmarks; the ``Date`` header
comes from the simulator's clock, as a real server's comes from its own.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import socket
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase
from typing import Any
from urllib.parse import parse_qs, urlsplit

from multirun.core.httpserve import QuietHTTPServer
from multirun.sim.app import Reply, SimApp, json_reply
from multirun.sim.params import ApiFail

MAX_BODY = 1 << 20
log = logging.getLogger("multirun.sim")


class SimHTTPServer(QuietHTTPServer):
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: SimApp) -> None:
        self.app = app
        super().__init__(address, _SimHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client vanished mid-request: not worth a traceback on stderr."""
        log.debug("connection error", exc_info=True)


class _SimHandler(BaseHTTPRequestHandler):
    server: SimHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "multirun-sim"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is closed after this many seconds
    disable_nagle_algorithm = True  # replies are small: do not hold them back 40 ms

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, on the simulator's clock (which tests may advance)."""
        now = self.server.app.broker.clock.now() if timestamp is None else timestamp
        return email.utils.formatdate(now, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's per-request log: URLs carry api keys and tokens."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unknown method...) in the API's form."""
        self.close_connection = True  # the request could not be parsed: nothing after it can be
        reply = json_reply(
            code, ApiFail(code, message or self.responses.get(code, ("",))[0]).body()
        )
        with contextlib.suppress(OSError):
            self.send_response(code, message)
            self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        params = _read_params(self, method, url.query)
        if isinstance(params, ApiFail):
            self.close_connection = True  # an unread body must not be parsed as a request
        reply = self.server.app.dispatch(method, url.path, params)
        if reply.drop:
            self._drop()
        else:
            self._write(reply)

    def _write(self, reply: Reply) -> None:
        if reply.trickle_s > 0:
            self._trickle(reply)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            if reply.encoding:
                self.send_header("Content-Encoding", reply.encoding)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    def _trickle(self, reply: Reply) -> None:
        """The whole reply, status line included, one byte every ``reply.trickle_s``."""
        self.close_connection = True  # a client that gave up leaves the rest unread
        phrase = self.responses.get(reply.status, ("",))[0]
        head = (
            f"{self.protocol_version} {reply.status} {phrase}\r\n"
            f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(reply.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        data = head + reply.body
        stopping = self.server.app.stopping
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if i + 1 < len(data) and stopping.wait(reply.trickle_s):
                    break
        except OSError:
            pass

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _read_params(handler: BaseHTTPRequestHandler, method: str, query: str) -> dict | ApiFail:
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    # read even a GET's body: left unread, it would be parsed as the connection's next request
    raw = _read_body(handler)
    if isinstance(raw, ApiFail):
        return raw
    if method == "GET":
        return params
    body = _parse_body(raw)
    if isinstance(body, ApiFail):
        return body
    params.update(body)
    return params


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | ApiFail:
    if handler.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
        return _read_chunked(handler.rfile)
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        return ApiFail(400, "invalid Content-Length")
    if length < 0 or length > MAX_BODY:
        return ApiFail(400, "request body too large")
    return handler.rfile.read(length) if length else b""


def _read_chunked(rfile: BufferedIOBase) -> bytes | ApiFail:
    """A ``Transfer-Encoding: chunked`` body (what requests sends for a generator)."""
    body = b""
    while True:
        size_line = rfile.readline(1024).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            return ApiFail(400, "invalid chunked request body")
        if size < 0 or len(body) + size > MAX_BODY:
            return ApiFail(400, "request body too large")
        if size == 0:
            while rfile.readline(1024).strip():  # trailers, up to the blank line
                pass
            return body
        body += rfile.read(size)
        rfile.readline(1024)  # the CRLF after each chunk


def _parse_body(raw: bytes) -> dict[str, Any] | ApiFail:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except RecursionError:
        return ApiFail(400, "request body is nested too deeply")
    except ValueError:
        if "=" in text and not text.startswith(("{", "[")):
            return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
        return ApiFail(400, "request body is not valid JSON")
    if not isinstance(data, dict):
        return ApiFail(400, "request body must be a JSON object")
    return data
