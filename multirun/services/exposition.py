"""The Prometheus text exposition, written by hand, and the HTTP endpoint that serves it.

:mod:`multirun.services.metrics` renders its page from parts it caches between scrapes
(each account's lines, re-rendered only when its files changed); this module holds what
that rendering must get exactly right, and the small server that replaces
``prometheus_client``'s. Why by hand: at 50 accounts (~10,900 samples)
``prometheus_client``'s ``generate_latest`` cost ~60 ms of CPU a scrape, most of it
formatting one sample object at a time, and its server gzipped the page at level 9
(~22 ms more).

What stays exactly as ``prometheus_client`` writes it: a value's spelling (its
``floatToGoString``: ``1.0``, ``1e+06``, ``+Inf``, ``NaN``), the labels of a sample sorted
by name, a label value's escaping (backslash, double quote, newline), HELP's escaping,
each family's HELP and TYPE lines (a counter named ``..._total`` in the text format,
without the suffix in OpenMetrics), the content negotiation (its ``choose_encoder``:
OpenMetrics 1.0.0 when the scraper asks for it, as Prometheus does; the text format 0.0.4
otherwise) and the content types. Any path but ``/favicon.ico`` serves the page, as
before.

gzip only when the request's ``Accept-Encoding`` names it, at level 1, not 9: a scrape
every 15 s over loopback or a LAN gains little from the last bytes, and on this text
(the same prefixes line after line) level 1 costs ~1.3 ms instead of ~22 ms for a page
~18x smaller instead of ~23x.
"""

from __future__ import annotations

import gzip
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.utils import floatToGoString

from multirun.core.httpserve import QuietHTTPServer

GZIP_LEVEL = 1
OPENMETRICS = "application/openmetrics-text"
EOF = "# EOF\n"  # OpenMetrics' last line

SPELLED_MAX = 8192
_SPELLED: dict[float, str] = {}  # number()'s memory: value -> its spelling
# The page, rendered: True for OpenMetrics, False for the text format 0.0.4.
Render = Callable[[bool], bytes]


def number(value: float) -> str:
    """A sample's value as ``prometheus_client`` spells it (Go's float format: its
    ``floatToGoString``), remembered: a page repeats a few thousand values (counts)."""
    text = _SPELLED.get(value)
    if text is None or value == 0:  # 0.0 and -0.0 are one key, spelled apart
        text = str(floatToGoString(value))
        if value == value:  # NaN: a new key each time
            if len(_SPELLED) >= SPELLED_MAX:
                _SPELLED.clear()
            _SPELLED[value] = text
    return text


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def sample_prefix(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """``name{label="value",...} ``: a sample line up to its value, labels sorted by name."""
    pairs = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in sorted(labels))
    return f"{name}{{{pairs}}} " if pairs else f"{name} "


@dataclass(frozen=True)
class Family:
    """One metric family: ``name`` as its samples are named (``multirun_ticks_total``; a
    histogram's base name), ``kind`` (gauge, counter, histogram) and its HELP text."""

    name: str
    kind: str
    help: str

    def header(self, openmetrics: bool) -> str:
        """Its HELP and TYPE lines (OpenMetrics names a counter without ``_total``)."""
        if openmetrics:
            name = self.name.removesuffix("_total") if self.kind == "counter" else self.name
            text = escape_label_value(self.help)
        else:
            name, text = self.name, self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {text}\n# TYPE {name} {self.kind}\n"


def negotiate(accept: str | None) -> tuple[bool, str]:
    """``(openmetrics, content type)`` for a request's ``Accept`` header, as
    ``prometheus_client`` chooses (its own function: the same answer for every header)."""
    _encoder, content_type = choose_encoder(accept or "")
    return content_type.startswith(OPENMETRICS), content_type


def encode(body: bytes, accept_encoding: str | None) -> tuple[bytes, bool]:
    """``(bytes to send, gzipped)``: gzip at :data:`GZIP_LEVEL` when the scraper accepts it."""
    if gzip_accepted(accept_encoding or ""):
        return gzip.compress(body, compresslevel=GZIP_LEVEL), True
    return body, False


class _ScrapeHandler(BaseHTTPRequestHandler):
    """GET any path: the page (``/favicon.ico``: nothing, for browsers)."""

    server: MetricsServer

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":
            self._reply(200, [], b"")
            return
        openmetrics, content_type = negotiate(self.headers.get("Accept"))
        try:
            body = self.server.render(openmetrics)
        except Exception as exc:  # a bug: say it, keep serving
            print(f"/metrics: the page could not be rendered: {exc!r}", file=sys.stderr, flush=True)
            self._reply(500, [("Content-Type", "text/plain")], b"the page could not be rendered\n")
            return
        body, gzipped = encode(body, self.headers.get("Accept-Encoding"))
        headers = [("Content-Type", content_type)]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        self._reply(200, headers, body)

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """One line per scrape in the log would be noise: none."""


class MetricsServer(QuietHTTPServer):
    """An HTTP server of ``render``'s page, a thread per request, asleep between scrapes."""

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, render: Render):
        self.render = render
        super().__init__(address, _ScrapeHandler, family=family)  # IPv6 for "::1"


def start_server(host: str, port: int, render: Render) -> tuple[MetricsServer, threading.Thread]:
    """Serve ``render``'s page on ``host:port`` (IPv4 or IPv6, port 0: a free one) in a
    daemon thread. Raises OSError when the address cannot be bound."""
    family, _type, _proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    server = MetricsServer((str(address[0]), port), family, render)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
