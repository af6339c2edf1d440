"""The hot path's wire: kept-alive connections to one server through the stdlib's http.client.

requests stays the client's library for everything around a request (the session, the
environment's proxies and CA bundle, TLS settings, the fallback path); the request itself,
when no proxy applies, goes out here: a GET /opened_trades cost 340 µs of CPU through
requests' urllib3 pool and 170 µs through http.client (bench/request_cost.py), and a
tick makes five or six of them. Every behaviour of the pool path is kept:

- **Deadline**: the connections are the request watchdog's kind
  (:class:`multirun.api.request_deadline.WatchedWireHTTPConnection`): attached to the
  watched request as they connect and send, cut when its total deadline passes.
- **Timeouts**: ``connect`` bounds the TCP connect and the TLS handshake, ``read`` each
  socket read and write after it (as urllib3's ``Timeout(connect, read)``).
- **TLS**: verified against requests' CA setting for the host (``verify``: True means
  certifi's bundle, a path a file or directory of CAs, False no verification), host name
  checked, TLS 1.2 at least (urllib3's default).
- **Headers**: read by :func:`read_headers` (http.client's limits, its email parser
  left out: a third of a request's CPU); the rest of the reply's framing is http.client's.
- **Reply**: :class:`WireReply` reads the body in chunks and decompresses gzip and
  deflate with a bounded output per chunk (a gzip bomb never inflates past the caller's
  cap plus one chunk); ``read_body`` caps and times it as on the pool path.
- **Failures**: raised as requests' adapter raises them (connect trouble as a
  ``requests.ConnectionError`` over urllib3's ``NewConnectionError`` or
  ``NameResolutionError``, a connect timeout as ``ConnectTimeout``, a read timeout as
  ``ReadTimeout``, TLS as ``SSLError``, a cut or garbled reply as ``ConnectionError``
  over urllib3's ``ProtocolError``), so the transport maps both paths alike; their text
  never holds the URL.
- **Reuse**: a connection goes back to the idle list only once its reply was read whole
  and the server keeps it alive; an idle connection the server closed meanwhile
  (readable while idle) is dropped before use, as urllib3 does.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import zlib
from typing import Any

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from multirun.api.request_deadline import WatchedWireHTTPConnection, WatchedWireHTTPSConnection

DECODABLE = frozenset({"gzip", "deflate"})  # what WireReply decompresses
MAX_IDLE = 4  # idle connections kept (requests' adapter: pool_maxsize=4)
MAX_LINE = 65536  # the longest status or header line read (http.client's own limits)
MAX_HEADERS = 100


class WireHeaders(dict[str, str]):
    """A reply's headers: names folded to lower case, the first of repeated ones kept
    (as email.message.Message.get); ``get`` takes a name in any case."""

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)


def read_headers(fp: Any) -> WireHeaders:
    """The header block from ``fp`` up to its blank line, with http.client's limits
    (line length, count); folded continuation lines joined to the header before."""
    headers = WireHeaders()
    last = ""
    for _ in range(MAX_HEADERS + 1):
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and last:
            headers[last] = f"{headers[last]} {text.strip()}"
            continue
        name, colon, value = text.partition(":")
        if not colon:
            continue  # not a header line: ignored, as the email parser keeps it out
        last = name.strip().lower()
        headers.setdefault(last, value.strip())
    raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")


class WireResponse(http.client.HTTPResponse):
    """http.client's response, its headers read by :func:`read_headers`: the email
    parser http.client uses cost a third of a request's CPU. The rest of ``begin``
    (status line, 100 Continue, chunked, keep-alive, length) is http.client's own."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            read_headers(self.fp)  # a 100 Continue's headers: skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_headers(self.fp)
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            if self.length is not None and self.length < 0:
                self.length = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class WireHTTPConnection(WatchedWireHTTPConnection):
    response_class = WireResponse


class WireHTTPSConnection(WatchedWireHTTPSConnection):
    response_class = WireResponse


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS settings requests' adapter would use for ``verify``."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        path = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        is_dir = os.path.isdir(path)  # as requests' adapter tells a CA file from a directory
        context = ssl.create_default_context(
            cafile=None if is_dir else path, capath=path if is_dir else None
        )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class WireReply:
    """One reply: ``status``, ``headers`` (case-insensitive ``get``), and its body read
    in chunks through :meth:`read`, decompressed (gzip, deflate) with bounded output."""

    def __init__(self, wire: Wire, conn: http.client.HTTPConnection) -> None:
        self._wire = wire
        self._conn: http.client.HTTPConnection | None = conn
        self._raw = conn.getresponse()
        self.status = self._raw.status
        self.headers = self._raw.headers
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        self._inflate: Any = None
        if encoding == "gzip":
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = _Deflate()
        self._done = False

    def read(self, amount: int, decode_content: bool = True) -> bytes:
        """Up to ``amount`` bytes of the (decompressed) body; b"" at its end."""
        while True:
            if self._inflate is None:
                return self._read_raw(amount)
            tail = self._inflate.unconsumed_tail
            data = tail if tail else self._read_raw(amount)
            try:
                if not data:
                    return self._inflate.flush() if not self._done else b""
                out = self._inflate.decompress(data, amount)
            except zlib.error as exc:
                raise urllib3.exceptions.DecodeError(f"undecodable body: {exc}") from None
            if out:
                return out

    def _read_raw(self, amount: int) -> bytes:
        if self._done:
            return b""
        try:
            data = self._raw.read(amount)
        except (OSError, http.client.HTTPException) as exc:
            raise as_requests_error(exc, connected=True) from None
        self._done = not data
        return data

    def release_conn(self) -> None:
        """Give the connection back for reuse if the body was read whole and the server
        keeps it open; else close it."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if self._done and not self._raw.will_close:
            self._wire.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (a reply cut short)."""
        if self._conn is not None:
            self._conn.close()


class _Deflate:
    """HTTP's ``deflate``: zlib-wrapped, or raw deflate from servers that get it wrong
    (urllib3 accepts both)."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj()
        self._first = True

    @property
    def unconsumed_tail(self) -> bytes:
        return self._obj.unconsumed_tail

    def decompress(self, data: bytes, amount: int) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._obj.decompress(data, amount)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._obj.decompress(data, amount)

    def flush(self) -> bytes:
        return self._obj.flush()


class Wire:
    """Kept-alive http.client connections to one host, one request at a time each."""

    def __init__(self, scheme: str, host: str, port: int | None, verify: bool | str) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self._context = tls_context(verify) if scheme == "https" else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def request(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str],
        timeout: tuple[float, float],
    ) -> WireReply:  # fmt: skip
        """Send one request; its reply with the headers read, the body not yet."""
        conn = self._connection(timeout[0])
        try:
            assert conn.sock is not None
            conn.sock.settimeout(timeout[1])
            conn.request(method, target, body=body, headers=headers)
            return WireReply(self, conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError | http.client.HTTPException):
                raise as_requests_error(exc, connected=True) from None
            raise

    def _connection(self, connect_s: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.sock is not None and not _dropped(conn.sock):
                return conn
            conn.close()
        if self._context is not None:
            conn = WireHTTPSConnection(
                self.host, self.port, timeout=connect_s, context=self._context
            )
        else:
            conn = WireHTTPConnection(self.host, self.port, timeout=connect_s)
        try:
            conn.connect()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError):
                raise as_requests_error(exc, connected=False, host=self.host) from None
            raise
        return conn


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed (or written to) by the server:
    readable while no request is in flight."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def as_requests_error(exc: BaseException, *, connected: bool, host: str = "") -> Exception:
    """The exception requests' adapter raises for the same trouble on its urllib3 path."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return requests.exceptions.SSLError(urllib3.exceptions.SSLError(type(exc).__name__))
    if isinstance(exc, TimeoutError | socket.timeout):
        if not connected:
            return requests.ConnectTimeout(urllib3.exceptions.ConnectTimeoutError(None, "timeout"))
        return requests.ReadTimeout(urllib3.exceptions.ReadTimeoutError(None, "", "timeout"))  # type: ignore[arg-type]
    if not connected:
        if isinstance(exc, socket.gaierror):
            reason = urllib3.exceptions.NameResolutionError(host, None, exc)  # type: ignore[arg-type]
            return requests.ConnectionError(reason)
        return requests.ConnectionError(
            urllib3.exceptions.NewConnectionError(None, type(exc).__name__)  # type: ignore[arg-type]
        )
    return requests.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", type(exc).__name__)
    )
