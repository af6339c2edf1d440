"""The dashboard's HTTP server: a threaded standard-library server, a handful of routes.

==========================================  ==========================================
``GET /``                                   the page (or the token form, once)
``POST /login``                             the token in, the session cookie out
``GET /api/status``                         ``multirun status --json``'s document
``GET /api/fleet``                          what the page draws (status, extras, banners)
``GET /api/accounts/NAME/logs``             the account's last 200 log lines
``GET /api/accounts/NAME/trades``           its journaled trades of today
``POST /api/accounts/NAME/ACTION``          stop, start, restart (never by GET: 405)
==========================================  ==========================================

Every request passes :class:`~multirun.web.guard.Guard` first (Host, then the token,
then for an action Origin, CSRF and read-only); a refused request reads nothing and
changes nothing. Each reply says ``Cache-Control: no-store`` and a Content-Security-Policy
that lets the page load nothing from anywhere else.

HTTP/1.1 with keep-alive: an open page polls over one connection (a new connection and
a thread per poll were a third of what the server cost), freed after
:data:`REQUEST_TIMEOUT_S` without a request. The listening socket is waited on with the
stop's own wake-up, so a dashboard nobody looks at costs nothing, and a stop is at once.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from multirun.config.specs import RunnerSpec, WebSpec
from multirun.core.errors import FatalError
from multirun.core.httpserve import QuietHTTPServer
from multirun.core.redact import Redactor, url_secrets
from multirun.ops import locate
from multirun.web import actions
from multirun.web.actions import ACTIONS, Controller
from multirun.web.fleet import AccountFacts, Fleet, moved, watched
from multirun.web.guard import CSRF_HEADER, Guard

POLL_MS = (
    2000  # the page's refresh (issue 26: at most 2 s); 3 pages over 50 accounts: ~1% of a core
)
MAX_BODY = 4096  # a login form or an action's body; anything longer is refused
REQUEST_TIMEOUT_S = 10.0  # a client that stops sending frees its thread
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def _asset(name: str) -> str:
    return resources.files("multirun.web").joinpath(name).read_text(encoding="utf-8")


class Dashboard:
    """The page and its API over a :class:`Fleet`, guarded, acting through a Controller."""

    def __init__(
        self, fleet: Fleet, guard: Guard, controller: Controller, *, host: str, port: int
    ) -> None:
        self.fleet = fleet
        self.guard = guard
        self.controller = controller
        self.host, self.port = host, port
        self.page = _asset("page.html")
        self.login_page = _asset("login.html")
        self.httpd: QuietHTTPServer | None = None
        self._serving: threading.Thread | None = None
        self._body_lock = threading.Lock()
        self._fleet_body: tuple[dict[str, Any], bytes] | None = None  # the view, encoded
        self._encoded: dict[str, tuple[object, bytes]] = {}  # a log tail's, trades', encoded
        # their rows, each encoded, by id (each row kept with its bytes: its id is its own)
        self._rows_encoded: dict[str, dict[int, tuple[object, bytes]]] = {}
        # each account's row of /api/fleet as encoded last (kept while only its uptime moves)
        self._fleet_rows: dict[str, _EncodedRow] = {}
        # the actions' sentences, by what they depend on (actions.effects_key): the last
        # build's and this one's (those no row needs any more are not kept)
        self._last_effects: dict[tuple[str, ...], dict[str, str]] = {}
        self._next_effects: dict[tuple[str, ...], dict[str, str]] = {}

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/"

    def start(self) -> str:
        """Bind and serve in a thread; the page's URL (the real port when 0 was asked)."""
        handler = type("Handler", (_Handler,), {"dashboard": self})
        try:
            self.httpd = QuietHTTPServer((self.host, self.port), handler)
        except OSError as error:
            raise FatalError(f"cannot serve the dashboard on {self.url}: {error}") from None
        self.port = int(self.httpd.server_address[1])
        self.guard.port = self.port
        serve = self.httpd.serve_forever  # asleep until a page connects (no polling)
        self._serving = threading.Thread(target=serve, name="dashboard", daemon=True)
        self._serving.start()
        return self.url

    def stop(self) -> None:
        """Stop at once: no new connection, and the open ones (kept alive) closed."""
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.close_connections()
        if self._serving is not None:
            self._serving.join()
        self.httpd.server_close()
        self.httpd = None
        self.fleet.close()

    # --- documents -------------------------------------------------------------------

    def render_page(self) -> str:
        config = {
            "csrf": self.guard.csrf,
            "read_only": self.guard.read_only,
            "poll_ms": POLL_MS,
            "actions": list(ACTIONS),
        }
        # In a <script> element: "</" must not close it early.
        text = json.dumps(config).replace("</", "<\\/")
        return self.page.replace("__MULTIRUN_CONFIG__", text)

    def fleet_json(self) -> bytes:
        """``/api/fleet``'s body, encoded once per build of the fleet's view: the pages
        polling while it lives get the same bytes (each page's own effects and encoding
        were a third of what the dashboard cost at 50 accounts)."""
        view = self.fleet.view()
        with self._body_lock:
            if self._fleet_body is None or self._fleet_body[0] is not view:
                self._fleet_body = (view, self._encode_view(view))
                self._last_effects, self._next_effects = self._next_effects, {}
            return self._fleet_body[1]

    def encoded(self, key: str, document: list[dict[str, Any]]) -> bytes:
        """``document`` as JSON, encoded once while the fleet returns the same object for
        ``key`` (a log tail or trades read again only when their file changed); and then
        only its rows that are new: the fleet keeps a row it did not change (a tick adds
        a log line or two, a trade; re-encoding the 200 lines, or a day of trades, was
        most of what answering them cost)."""
        with self._body_lock:
            hit = self._encoded.get(key)
            if hit is None or hit[0] is not document:
                body, self._rows_encoded[key] = _compact_rows(
                    document, self._rows_encoded.get(key, {})
                )
                hit = self._encoded[key] = (document, body)
            return hit[1]

    def _encode_view(self, fleet_view: dict[str, Any]) -> bytes:
        """The view encoded, with the actions' sentences: each set once in ``effects`` (a
        list), each row naming its own by its place there (``effects_id``): most rows
        share a few sets, which were two fifths of the body when every row carried its
        own. Of a row, only the fields whose values are not the very objects encoded last
        build are encoded again (the fleet keeps what did not change: most rows only their
        uptime, a tick a dozen fields of 45), its sentences looked up only when its
        positions or on_stop moved."""
        table: list[dict[str, str]] = []
        places: dict[tuple[str, ...], int] = {}
        kept, self._fleet_rows = self._fleet_rows, {}
        parts = []
        for row in fleet_view["accounts"]:
            was = kept.get(row["name"])
            changed = None if was is None else moved(was.row, row)
            on_stop, positions = row.get("on_stop"), row.get("positions") or ()
            if was and changed is not None and not {"positions", "on_stop"} & set(changed):
                key = was.key  # what the sentences depend on did not move
            else:
                key = actions.effects_key(on_stop, positions)
            place = places.get(key)
            if place is None:
                place = places[key] = len(table)
                found = self._last_effects.get(key) or actions.effects(on_stop, positions)
                table.append(found)
                self._next_effects[key] = found
            if was is None or changed is None:
                encoded = _EncodedRow.of(row, key, place)
            else:
                encoded = was
                if changed or place != was.place:
                    encoded.take(row, changed, key, place)
            self._fleet_rows[row["name"]] = encoded
            parts.append(encoded.body)
        view = {**fleet_view, "effects": table, "read_only": self.guard.read_only}
        return _compact_with(view, "accounts", b"[" + b",".join(parts) + b"]")


@dataclass(slots=True)
class _EncodedRow:
    """A row of ``/api/fleet`` encoded with its ``effects_id`` (``place``), field by field:
    a field whose value moved is encoded again, not the row."""

    row: dict[str, Any]  # the row encoded
    key: tuple[str, ...]  # what its actions' sentences depend on (actions.effects_key)
    place: int
    fields: list[bytes]  # each field's ``"name":value``, in the row's order
    index: dict[str, int]  # each field's place in ``fields``
    body: bytes

    @classmethod
    def of(cls, row: dict[str, Any], key: tuple[str, ...], place: int) -> _EncodedRow:
        fields = [_field(name, value) for name, value in row.items()]
        index = {name: at for at, name in enumerate(row)}
        return cls(row, key, place, fields, index, _row_body(fields, place))

    def take(
        self, row: dict[str, Any], changed: list[str], key: tuple[str, ...], place: int
    ) -> None:
        """Take ``row`` (this one's fields in the same order, ``changed`` moved)."""
        for name in changed:
            self.fields[self.index[name]] = _field(name, row[name])
        self.row, self.key, self.place = row, key, place
        self.body = _row_body(self.fields, place)


def _row_body(fields: list[bytes], place: int) -> bytes:
    """``_compact({**row, "effects_id": place})`` of the row whose fields these are."""
    return b"{" + b",".join(fields) + b',"effects_id":' + int.__repr__(place).encode() + b"}"


def _field(name: str, value: object) -> bytes:
    """``"name":value`` as :func:`_compact` writes it in an object."""
    return encode_basestring_ascii(name).encode() + b":" + _value(value)


def _value(value: object) -> bytes:
    """``_compact(value)``; a string, a finite float, an int, null, true or false (most
    fields) written directly as json writes them, without an encoder's call around it."""
    if type(value) is str:
        return encode_basestring_ascii(value).encode()
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value).encode()
    if type(value) is int:
        return int.__repr__(value).encode()
    if value is None or type(value) is bool:
        return b"null" if value is None else b"true" if value else b"false"
    return _compact(value)


def _compact(document: object) -> bytes:
    """JSON without the spaces after separators: a tenth less to send and for the page to
    parse, every poll (the fleet's body is tens of KB at 50 accounts)."""
    return _ENCODER.encode(document).encode()


# json.dumps(separators=...) made an encoder at every call: one made once encodes the same
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _compact_with(document: dict[str, Any], key: str, encoded: bytes) -> bytes:
    """``_compact(document)``, its ``key``'s value given ``encoded`` already."""
    items = (
        _compact(name) + b":" + (encoded if name == key else _compact(value))
        for name, value in document.items()
    )
    return b"{" + b",".join(items) + b"}"


def _compact_rows(
    rows: list[dict[str, Any]], was: dict[int, tuple[object, bytes]]
) -> tuple[bytes, dict[int, tuple[object, bytes]]]:
    """``_compact(rows)``, each row's bytes taken from ``was`` when it is the very object
    encoded then; and the rows' bytes now, for the next time."""
    now: dict[int, tuple[object, bytes]] = {}
    for row in rows:
        hit = was.get(id(row))
        if hit is None or hit[0] is not row:
            hit = (row, _compact(row))
        now[id(row)] = hit
    return b"[" + b",".join(now[id(row)][1] for row in rows) + b"]", now


def _row_key(name: str) -> str:
    return unquote(name)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    protocol_version = "HTTP/1.1"  # keep-alive: every reply says its Content-Length
    timeout = REQUEST_TIMEOUT_S  # also how long an idle kept-alive connection is kept
    disable_nagle_algorithm = True  # the body, written after the headers, goes out at once
    server_version = "multirun"
    sys_version = ""
    body_read = False  # whether the request's body was read (else the connection closes)
    pending = b""  # the reply's body, sent with its headers by flush_headers

    # --- routing ---------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if not self._host_ok():
            return
        if path == "/":
            if not self._authed():
                self._send(HTTPStatus.OK, self.dashboard.login_page.replace("__MESSAGE__", ""))
                return
            self._send(HTTPStatus.OK, self.dashboard.render_page())
            return
        if not self._authed():
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in first (the dashboard token)"})
            return
        parts = path.strip("/").split("/")
        if path == "/api/status":
            self._json(HTTPStatus.OK, self.dashboard.fleet.status())
        elif path == "/api/fleet":
            self.send_response(HTTPStatus.OK)
            self._body(self.dashboard.fleet_json(), "application/json")
        elif len(parts) == 4 and parts[:2] == ["api", "accounts"] and parts[3] in ACTIONS:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self._body(b'{"error": "actions are POST only"}', "application/json", allow="POST")
        elif len(parts) == 4 and parts[:2] == ["api", "accounts"] and parts[3] == "logs":
            self._per_account("logs", _row_key(parts[2]), self.dashboard.fleet.logs)
        elif len(parts) == 4 and parts[:2] == ["api", "accounts"] and parts[3] == "trades":
            self._per_account("trades", _row_key(parts[2]), self.dashboard.fleet.trades)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such page"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not self._host_ok():
            return
        guard = self.dashboard.guard
        if not guard.origin_ok(self.headers.get("Origin"), self.headers.get("Host")):
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
            return
        body = self._read_body()
        if body is None:
            return
        if path == "/login":
            self._login(body)
            return
        if not self._authed():
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in first (the dashboard token)"})
            return
        parts = path.strip("/").split("/")
        if not (len(parts) == 4 and parts[:2] == ["api", "accounts"] and parts[3] in ACTIONS):
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such action"})
            return
        if not guard.csrf_ok(self.headers.get(CSRF_HEADER)):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong CSRF token"})
            return
        if guard.read_only:
            self._json(HTTPStatus.FORBIDDEN, {"error": "the dashboard is read-only"})
            return
        name = _row_key(parts[2])
        try:
            self.dashboard.fleet.logs(name)  # an account the fleet knows, or KeyError
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no account named {name}"})
            return
        reply = self.dashboard.controller.run(parts[3], name)
        self._json(HTTPStatus.OK if reply["ok"] else HTTPStatus.CONFLICT, reply)

    def do_PUT(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "GET or POST only"})

    do_DELETE = do_PATCH = do_PUT

    # --- checks ----------------------------------------------------------------------

    def _host_ok(self) -> bool:
        if self.dashboard.guard.host_ok(self.headers.get("Host")):
            return True
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unknown Host"})
        return False

    def _authed(self) -> bool:
        return self.dashboard.guard.authed(
            self.headers.get("Cookie"), self.headers.get("Authorization")
        )

    def _login(self, body: bytes) -> None:
        form = parse_qs(body.decode("utf-8", errors="replace"))
        cookie = self.dashboard.guard.login((form.get("token") or [""])[0])
        if cookie is None:
            page = self.dashboard.login_page.replace("__MESSAGE__", "Wrong token.")
            self._send(HTTPStatus.FORBIDDEN, page)
            return
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Set-Cookie", cookie)
        self.send_header("Location", "/")
        self._body(b"", "text/plain")

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too long"})
            return None
        body = self.rfile.read(int(length))
        self.body_read = True
        return body

    def parse_request(self) -> bool:
        self.body_read = False  # a kept-alive connection's handler serves request after request
        return super().parse_request()

    def _body_left(self) -> bool:
        """Whether the request carries a body not read: it would be taken for the next
        request on this connection, which is closed after the reply instead."""
        if self.headers.get("Transfer-Encoding"):
            return True
        return not self.body_read and (self.headers.get("Content-Length") or "0") != "0"

    # --- replies ---------------------------------------------------------------------

    def _per_account(self, kind: str, name: str, read: Callable[[str], Any]) -> None:
        try:
            document = read(name)
        except KeyError:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no account named {name}"})
            return
        self.send_response(HTTPStatus.OK)
        self._body(self.dashboard.encoded(f"{kind}:{name}", document), "application/json")

    def _json(self, status: HTTPStatus, document: Any) -> None:
        self.send_response(status)
        self._body(json.dumps(document).encode(), "application/json")

    def _send(self, status: HTTPStatus, page: str) -> None:
        self.send_response(status)
        self._body(page.encode(), "text/html; charset=utf-8")

    def _body(self, data: bytes, kind: str, *, allow: str | None = None) -> None:
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        if allow:
            self.send_header("Allow", allow)
        if self._body_left():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.pending = data
        self.end_headers()

    def flush_headers(self) -> None:
        """The headers and the body in one write: one packet for a small reply, and one
        system call less for every reply (the base class writes them one after the other)."""
        buffer: list[bytes] | None = getattr(self, "_headers_buffer", None)
        if buffer is not None and self.pending:
            buffer.append(self.pending)
        self.pending = b""
        super().flush_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per poll would drown the supervisor's log


# --- assembling one ------------------------------------------------------------------


def for_runner(
    runner: RunnerSpec, spec: WebSpec, *, state_dir: Path | None = None, wait_s: float
) -> Dashboard:
    """A dashboard for ``runner``'s state directory (or ``state_dir``), configured by ``spec``."""
    where = state_dir or runner.state_dir
    view = locate.FileView(
        runner.path,
        where,
        tuple((a.name, a.enabled) for a in runner.accounts),
        runner.stop_timeout_s,
    )
    info = {a.name: AccountFacts(a.strategy, a.instrument, a.on_stop) for a in runner.accounts}
    fleet = Fleet(where, file_view=watched(view), accounts=info, redactor=_redactor(runner, spec))
    guard = Guard(spec.host, spec.port, token=spec.token, read_only=spec.read_only)
    controller = Controller(where, timeout_s=wait_s)
    return Dashboard(fleet, guard, controller, host=spec.host, port=spec.port)


def _redactor(runner: RunnerSpec, spec: WebSpec) -> Redactor:
    found = [a.api_key.reveal() for a in runner.accounts if a.api_key]
    for target in runner.notify:
        found += url_secrets(target.url.reveal())
    if spec.token:
        found.append(spec.token.reveal())
    return Redactor(found)


def control_wait_s(runner: RunnerSpec) -> float:
    """How long an action may take: a stop, its sweep, a start, with margin (as the CLI)."""
    return 2 * runner.stop_timeout_s + 120.0


def serve(runner: RunnerSpec, ready: Callable[[str], None]) -> int:
    """The supervisor's dashboard child (with ``web:``): serve until SIGTERM."""
    assert runner.web is not None
    return run(for_runner(runner, runner.web, wait_s=control_wait_s(runner)), ready)


def run(dashboard: Dashboard, announce: Callable[[str], None]) -> int:
    """Serve ``dashboard`` until SIGTERM or Ctrl-C; ``announce`` gets its URL once bound."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    url = dashboard.start()
    print(f"serving the dashboard on {url}", flush=True)
    announce(url)
    try:
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    dashboard.stop()
    return 0
