"""The HTTP transport of the ALGOGENE client: one request in, JSON or a typed error out.

- **One session.** One :class:`requests.Session` (connections are reused; the hot path
  goes straight to its urllib3 pool: :mod:`multirun.api.http_session`), explicit
  ``(connect, read)`` timeouts on every request, no hidden urllib3 retries, no redirects
  followed (a 3xx is a :class:`ProtocolError`). GET parameters go in the query string;
  POST parameters go in a JSON body sent with ``Content-Type: application/json``.
- **Errors.** Every failure is one of :mod:`multirun.core.errors`: 401/403 :class:`AuthError`
  (and a 200 refusal that names the session token), 429 :class:`RateLimitError`, 5xx
  :class:`ServerError`, connection trouble and timeouts :class:`NetworkError` (its kind
  :class:`NotConnected` when no connection was made, so nothing was sent), replies
  that are not the documented JSON :class:`ProtocolError`, other 4xx
  :class:`OrderRejected` (writes) or :class:`RequestRejected` (reads). Messages are one
  line, name the endpoint and the HTTP status, and never contain the api_key, a token or
  a request URL (which for GETs carries both): they are built from names, server text
  goes through :meth:`multirun.core.redact.Redactor.server_text`, and requests' own
  exceptions (whose text includes the URL) are never chained. urllib3's debug log lines
  carry URLs too: :func:`multirun.core.redact.install_log_redaction` masks them.
- **Retries.** :meth:`RequestSender.retrying` repeats a read on NetworkError, ServerError,
  RateLimitError and ProtocolError with exponential backoff and full jitter, until a
  deadline. A 429's ``Retry-After`` (seconds or an HTTP date) is honoured: the pause is at
  least that long, and when it would end past the deadline the RateLimitError is raised at
  once, carrying it (``retry_after_s``) for the caller to keep to. Nothing here repeats a
  write. :func:`is_retryable` says which failures are worth repeating an idempotent call
  for (callers that retry on their own use it).
- **Total deadline, size cap.** Every request has a total deadline (``request_deadline_s``,
  30 s by default) covering connect, request, headers and the whole body, enforced by
  :mod:`multirun.api.request_deadline`'s watchdog; when it passes, the error is the same
  NetworkError as a read timeout. The reply body is read in chunks and capped (``max_reply_bytes``,
  4 MiB decompressed by default): past it, a ProtocolError.
- **Interrupts.** With an ``interrupt`` (a stop flag) set, a retry pause ends at once with
  :class:`~multirun.core.errors.Interrupted` (unless :meth:`RequestSender.interrupting` turned it
  off); a request in flight is never cut by it (its deadline bounds it).
- **Heartbeat.** ``heartbeat`` (optional) is called before every request.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import requests
import urllib3

from multirun.api import models
from multirun.api.http_session import HttpSession
from multirun.api.request_deadline import ReplyTooLarge, RequestDeadlinePassed, read_body, watchdog
from multirun.core.clock import Clock, StopSignal
from multirun.core.errors import (
    ApiError,
    AuthError,
    CloseUnconfirmed,
    Interrupted,
    NetworkError,
    OrderRejected,
    ProtocolError,
    RateLimitError,
    RequestRejected,
    ServerError,
)
from multirun.core.redact import Redactor, install_log_redaction

log = logging.getLogger("multirun.client")

install_log_redaction()


class _HeaderNoise(logging.Filter):
    """urllib3 logs a reply whose headers it could not parse (a trickled or cut reply)
    as a warning with its traceback; the request fails on its own, with our one-line
    error. Here it is one debug line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, urllib3.exceptions.HeaderParsingError | TypeError):
            return True
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


for _name in ("urllib3.connection", "urllib3.connectionpool"):  # urllib3 2.x, 1.x
    logging.getLogger(_name).addFilter(_HeaderNoise())

T = TypeVar("T")

# A JSON object as decoded from a reply, and what we send (query parameters or JSON body).
Json = dict[str, Any]
# Told each request's endpoint and outcome once it ended (telemetry counts them).
RequestHook = Callable[[str, str], None]

WRITE_ENDPOINTS = frozenset({"open_order", "close_orders", "cancel_orders"})
# Failures after which a read is worth repeating.
RETRYABLE_READ = (NetworkError, ServerError, ProtocolError, RateLimitError)
REQUEST_DEADLINE_S = 30.0  # one request, connect to last byte
MAX_REPLY_BYTES = 4 * 1024 * 1024  # one reply body, decompressed

# A 200 refusal about our session token (renew it and repeat the call), as opposed to one
# that only mentions a session ("market session closed": a refusal like any other).
_TOKEN_WORDS = re.compile(
    r"\btoken\b|\bsession\s+(?:expired|invalid|revoked|not\s+found)\b|\binvalid\s+session\b",
    re.IGNORECASE,
)

# The stop signal of the transport's pauses: never set (a pause always runs its course).
_NEVER = threading.Event()


class NotConnected(NetworkError):
    """No connection was made, so no byte of the request was sent: connection refused,
    host name not resolved, or connect timed out. A write that fails so was not placed."""


def _never_connected(exc: BaseException) -> bool:
    """Whether ``exc`` (what requests raised) failed while connecting: urllib3's
    NewConnectionError, NameResolutionError or ConnectTimeoutError, wrapped in a
    MaxRetryError (its ``reason``) or chained as an argument, cause or context."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        if isinstance(item, urllib3.exceptions.ConnectTimeoutError):
            return True  # NewConnectionError and NameResolutionError are kinds of it
        if isinstance(item, urllib3.exceptions.ProxyError | requests.exceptions.ProxyError):
            continue  # the proxy's own trouble: not proof that nothing went out
        todo += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return False


def is_retryable(exc: BaseException) -> bool:
    """Whether repeating the same idempotent call (a read; a close or cancel by trade id)
    may succeed where ``exc`` failed: network trouble and timeouts (NetworkError), 5xx
    (ServerError), throttling (RateLimitError), a malformed or oversized reply
    (ProtocolError), trades not confirmed closed yet (CloseUnconfirmed), and a session
    token refused even after its renewal (AuthError on any endpoint but ``session``, other
    than 403: the next call renews it again). Not: refused credentials (AuthError from
    ``session``), 403, refusals (OrderRejected, RequestRejected), OrderUncertain (never
    resend an order), Interrupted, or anything that is not an ApiError.
    """
    if isinstance(exc, NetworkError | ServerError | RateLimitError | ProtocolError):
        return True
    if isinstance(exc, CloseUnconfirmed):
        return True
    if isinstance(exc, AuthError):
        return exc.status != 403 and exc.endpoint != "session"
    return False


@dataclass(frozen=True)
class Request:
    """One HTTP request as a :class:`Transport` sends it (credentials are in ``payload``)."""

    method: str
    endpoint: str
    payload: Json
    timeout: tuple[float, float]  # (connect, read) seconds
    total_s: float  # the whole exchange's deadline: connect, headers and body
    dated: bool = False  # whether the reply's Date header is wanted


@dataclass(frozen=True)
class RawReply:
    """A reply as it came: its status, its body (decompressed), its Date if asked for,
    and a 429's Retry-After in seconds (None when absent or unreadable)."""

    status: int
    body: bytes
    date: datetime | None = None
    retry_after_s: float | None = None


class Transport(Protocol):
    """Where requests go: the network (:class:`HttpTransport`), or canned replies in unit
    tests. ``handle`` sends exactly one request and returns its reply whatever its
    status; it raises NetworkError (NotConnected when nothing was sent) or ProtocolError
    for a reply it could not read whole."""

    def handle(self, request: Request) -> RawReply: ...

    def close(self) -> None: ...


class HttpTransport:
    """One pooled HTTP session to one server; each request within its total deadline,
    its body read in chunks up to ``max_reply_bytes``; redirects never followed."""

    def __init__(self, base_url: str, *, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.max_reply_bytes = max_reply_bytes
        self.http = HttpSession(base_url)  # requests' session and its direct path

    def close(self) -> None:
        self.http.close()

    def handle(self, request: Request) -> RawReply:
        endpoint, total = request.endpoint, request.total_s
        failure, unsent = "", False
        # Redirects are not followed: requests would re-send the credentials (the query
        # string, or for 307/308 the JSON body) to a URL of the replier's choosing.
        with watchdog().watching(total) as watch:
            raw: Any = None  # the urllib3 response whose body we read
            body, status, headers = b"", 0, {}
            try:
                raw = self.http.open(request.method, endpoint, request.payload, request.timeout)
                status, headers = raw.status, raw.headers
                body = read_body(raw, watch, self.max_reply_bytes)
                raw.release_conn()
                raw = None
            except ReplyTooLarge:
                failure = "too large"
            except RequestDeadlinePassed:
                failure = "deadline"
            except requests.ConnectTimeout:
                failure, unsent = "connect timed out", True
            except requests.Timeout:
                failure = f"no reply within {request.timeout[1]:g} s"
            except (requests.ConnectionError, urllib3.exceptions.ProtocolError, OSError) as exc:
                unsent = _never_connected(exc)
                failure = (
                    "connection could not be made" if unsent else "connection failed or dropped"
                )
            except urllib3.exceptions.DecodeError:
                failure = "undecodable"
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                failure = f"request failed ({type(exc).__name__})"
            finally:
                if raw is not None:  # cut short: the connection is not reused
                    raw.close()  # what requests' Response.close() does
                    raw.release_conn()
            if failure and watch.expired:
                failure, unsent = "deadline", False
        # raised here, outside the handlers: requests' text holds the URL
        if failure == "too large":
            raise ProtocolError(
                f"{endpoint}: reply larger than {self.max_reply_bytes} bytes (not read)",
                endpoint=endpoint,
            )
        if failure == "undecodable":
            raise ProtocolError(f"{endpoint}: reply body could not be decompressed",
                                endpoint=endpoint)  # fmt: skip
        if failure == "deadline":
            failure = f"no complete reply within {total:g} s (request deadline)"
        if unsent:
            raise NotConnected(f"{endpoint}: {failure} (nothing sent)", endpoint=endpoint)
        if failure:
            raise NetworkError(f"{endpoint}: {failure}", endpoint=endpoint)
        date = _date_header(headers) if request.dated else None
        wait = retry_after(headers.get("Retry-After")) if status == 429 else None
        return RawReply(status, body, date, wait)


class RequestSender:
    """Requests to one server through a :class:`Transport`: replies decoded and mapped
    to errors, reads retried, waits interruptible.

    ``secrets`` returns every secret value a reply might echo (the api key, the session
    tokens); server text quoted in an error is masked of them. ``clock`` times deadlines
    and pauses (tests pass a manual one); ``rng`` draws the backoff jitter. ``transport``:
    an :class:`HttpTransport` to ``base_url`` unless given (unit tests give a fake).
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        secrets: Callable[[], Iterable[str]],
        clock: Clock,
        rng: random.Random,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        interrupt: StopSignal | None = None,
        heartbeat: Callable[[], None] | None = None,
        on_request: RequestHook | None = None,
        transport: Transport | None = None,
    ) -> None:
        if request_deadline_s <= 0 or max_reply_bytes <= 0:
            raise ValueError("request_deadline_s and max_reply_bytes must be > 0")
        self._base = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.request_deadline_s = request_deadline_s
        self.interrupt = interrupt
        self._honour_interrupt = True
        self._heartbeat = heartbeat
        self._heartbeat_failed = False
        self._on_request = on_request
        self._secrets = secrets
        self._clock = clock
        self._rng = rng
        self.transport = transport or HttpTransport(self._base, max_reply_bytes=max_reply_bytes)

    @property
    def base_url(self) -> str:
        """The API's base URL, without its trailing slash."""
        return self._base

    def close(self) -> None:
        """Close the transport (an HTTP session's pooled connections). Idempotent."""
        self.transport.close()

    # --- interrupts -----------------------------------------------------------------

    @contextlib.contextmanager
    def interrupting(self, enabled: bool) -> Iterator[None]:
        """Within the block, the interrupt is honoured (True) or ignored (False): on_stop's
        close runs its retries with the stop flag set."""
        before = self._honour_interrupt
        self._honour_interrupt = enabled
        try:
            yield
        finally:
            self._honour_interrupt = before

    def active_interrupt(self) -> StopSignal | None:
        """The interrupt, when it is honoured now; else None."""
        return self.interrupt if self._honour_interrupt else None

    def interrupted(self, what: str) -> Interrupted | None:
        """An Interrupted error for ``what`` if the (honoured) interrupt is set, else None."""
        stop = self.active_interrupt()
        if stop is not None and stop.is_set():
            return Interrupted(f"{what}: stop requested; not waiting to retry")
        return None

    def pause(self, seconds: float, what: str = "request") -> None:
        """Wait ``seconds`` on the clock; raises Interrupted at once if the interrupt is
        (or becomes) set meanwhile."""
        stop = self.active_interrupt() or _NEVER
        self._clock.wait(stop, seconds)
        error = self.interrupted(what)
        if error is not None:
            raise error

    # --- one request ----------------------------------------------------------------

    def send(
        self,
        method: str,
        endpoint: str,
        payload: Json,
        read_timeout: float | None = None,
        deadline_s: float | None = None,
        *,
        dated: bool = False,
    ) -> tuple[Json, datetime | None]:
        """Exactly one HTTP request, done within ``min(request_deadline_s, deadline_s)``.
        Returns (decoded JSON object, the reply's Date header with ``dated``, else None:
        parsing it costs more than a tenth of a request, and only a session's is used).
        ``on_request`` hears its endpoint and outcome (:func:`request_outcome`) after it."""
        if self._on_request is None:
            return self._exchange(method, endpoint, payload, read_timeout, deadline_s, dated)
        error: BaseException | None = None
        try:
            return self._exchange(method, endpoint, payload, read_timeout, deadline_s, dated)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._on_request(endpoint, request_outcome(error))

    def _exchange(
        self,
        method: str,
        endpoint: str,
        payload: Json,
        read_timeout: float | None,
        deadline_s: float | None,
        dated: bool,
    ) -> tuple[Json, datetime | None]:
        self._beat()
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        total = min(self.request_deadline_s, deadline_s or self.request_deadline_s)
        reply = self.transport.handle(Request(method, endpoint, payload, timeout, total, dated))
        return self._decode(endpoint, reply), reply.date

    def _beat(self) -> None:
        if self._heartbeat is None:
            return
        try:
            self._heartbeat()
        except Exception as error:  # a heartbeat never stands in the way of a request
            if not self._heartbeat_failed:
                self._heartbeat_failed = True
                log.warning("heartbeat failed (%s); going on", type(error).__name__)

    def retrying(self, endpoint: str, once: Callable[[float, float], T], deadline: float) -> T:
        """``once(read_timeout, total_s)`` until it succeeds, raises something not worth
        repeating, or the next attempt would start after ``deadline`` (monotonic). Pauses
        are drawn uniformly from [0, min(2 s, 0.05 s * 2**attempt)] (exponential backoff,
        full jitter), and last at least a 429's Retry-After; each attempt's read timeout and
        total deadline are capped by the time left. A set interrupt ends a pause at once
        with Interrupted."""
        attempt = 0
        while True:
            left = max(deadline - self._clock.monotonic(), 0.2)
            try:
                return once(min(self.read_timeout, left), left)
            except RETRYABLE_READ as retryable:
                error: ApiError = retryable
            attempt += 1
            delay = self._rng.uniform(0.0, min(2.0, 0.05 * 2**attempt))
            if isinstance(error, RateLimitError) and error.retry_after_s is not None:
                delay = max(delay, error.retry_after_s)  # the server's word on pacing
            if self._clock.monotonic() + delay >= deadline:
                raise error
            stop = self.interrupted(f"{error}")
            if stop is not None:
                raise stop
            log.info("%s; retrying in %.2f s (attempt %d)", error, delay, attempt + 1)
            self.pause(delay, f"{error}")

    def parse(self, endpoint: str, parse: Callable[[Any], T], reply: object) -> T:
        """``parse(reply)``; a reply of the wrong shape is a ProtocolError."""
        try:
            return parse(reply)
        except models.ReplyError as bad:
            problem = self._server_text(str(bad))  # it may quote a key the server chose
        raise ProtocolError(f"{endpoint}: malformed reply: {problem}", endpoint=endpoint)

    def _decode(self, endpoint: str, raw: RawReply) -> Json:
        """The JSON object of a 200 reply; every other status mapped to its error."""
        status, body = raw.status, raw.body
        if status != 200:
            raise _status_error(endpoint, status, self._detail(body), raw.retry_after_s)
        reply, ok = _json(body)
        if not ok or not isinstance(reply, dict):
            raise ProtocolError(f"{endpoint}: HTTP 200 reply is not a JSON object",
                                endpoint=endpoint, status=status)  # fmt: skip
        if str(reply.get("status", "")).upper() in ("FAIL", "FAILED", "ERROR"):
            detail = self._detail(body)
            if _TOKEN_WORDS.search(detail):
                raise AuthError(f"{endpoint}: HTTP 200 refusal{detail}",
                                endpoint=endpoint, status=status)  # fmt: skip
            kind = OrderRejected if endpoint in WRITE_ENDPOINTS else RequestRejected
            raise kind(f"{endpoint}: HTTP 200 refusal{detail}", endpoint=endpoint, status=status)
        return reply

    def _detail(self, body: bytes) -> str:
        """``": <server message>"``, one line, with every secret masked, or ``""``."""
        reply, ok = _json(body)
        if not ok or not isinstance(reply, dict):
            return ""
        message = reply.get("err_msg") or reply.get("res") or reply.get("message") or ""
        if not isinstance(message, str) or not message.strip():
            return ""
        return f": {self._server_text(message)}"

    def _server_text(self, text: str) -> str:
        return Redactor(self._secrets()).server_text(text)


def request_outcome(error: BaseException | None) -> str:
    """A request's outcome class: ``2xx``, ``4xx``, ``5xx``, ``auth_rejected``,
    ``refused`` (an HTTP 200 refusal), ``timeout`` or ``dropped``."""
    if error is None:
        return "2xx"
    if isinstance(error, AuthError):
        return "auth_rejected"
    if isinstance(error, NetworkError):
        text = str(error)
        timed_out = "within" in text or "timed out" in text
        return "timeout" if timed_out else "dropped"
    if isinstance(error, ApiError) and error.status is not None:
        return "refused" if error.status == 200 else f"{error.status // 100}xx"
    if isinstance(error, ApiError):
        return "protocol"
    return "dropped"  # interrupted by a stop, or cut short otherwise


def _status_error(
    endpoint: str, status: int, detail: str, retry_after_s: float | None = None
) -> ApiError:
    text = f"{endpoint}: HTTP {status}"
    if status in (401, 403):
        why = "forbidden" if status == 403 else "credentials or token refused"
        return AuthError(f"{text} ({why}){detail}", endpoint=endpoint, status=status)
    if status == 429:
        asked = "" if retry_after_s is None else f"; Retry-After {retry_after_s:g} s"
        return RateLimitError(f"{text} (throttled{asked}){detail}", endpoint=endpoint,
                              status=status, retry_after_s=retry_after_s)  # fmt: skip
    if status >= 500:
        return ServerError(f"{text} (server error){detail}", endpoint=endpoint, status=status)
    if 400 <= status < 500:
        kind = OrderRejected if endpoint in WRITE_ENDPOINTS else RequestRejected
        return kind(f"{text} (refused){detail}", endpoint=endpoint, status=status)
    if 300 <= status < 400:
        return ProtocolError(f"{text} (redirect not followed: check the server URL)",
                             endpoint=endpoint, status=status)  # fmt: skip
    return ProtocolError(f"{text} (unexpected status)", endpoint=endpoint, status=status)


def _json(body: bytes) -> tuple[Any, bool]:
    """(decoded body, True), or (None, False) when the body is not JSON (an HTML error
    page, an empty or cut body, or nesting too deep for the decoder)."""
    try:
        return json.loads(body), True
    except (ValueError, RecursionError):
        return None, False


def _date_header(headers: Any) -> datetime | None:
    value = headers.get("Date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds, or an HTTP date
    compared with ``now``, default the wall clock); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
