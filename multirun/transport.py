"""The HTTP transport of the ALGOGENE client: one request in, JSON or a typed error out.

- **One session.** One :class:`requests.Session` (connections are reused), explicit
  ``(connect, read)`` timeouts on every request, no hidden urllib3 retries, no redirects
  followed (a 3xx is a :class:`ProtocolError`). GET parameters go in the query string;
  POST parameters go in a JSON body sent with ``Content-Type: application/json``.
- **Errors.** Every failure is one of :mod:`multirun.errors`: 401/403 :class:`AuthError`
  (and a 200 refusal that names the session token), 429 :class:`RateLimitError`, 5xx
  :class:`ServerError`, connection trouble and timeouts :class:`NetworkError`, replies
  that are not the documented JSON :class:`ProtocolError`, other 4xx
  :class:`OrderRejected` (writes) or :class:`RequestRejected` (reads). Messages are one
  line, name the endpoint and the HTTP status, and never contain the api_key, a token or
  a request URL (which for GETs carries both): they are built from names, server text
  goes through :meth:`multirun.redact.Redactor.server_text`, and requests' own
  exceptions (whose text includes the URL) are never chained. urllib3's debug log lines
  carry URLs too: :func:`multirun.redact.install_log_redaction` masks them.
- **Retries.** :meth:`Transport.retrying` repeats a read on NetworkError, ServerError,
  RateLimitError and ProtocolError with exponential backoff and full jitter, until a
  deadline. Nothing here repeats a write.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from multirun import models
from multirun.clock import Clock
from multirun.errors import (
    ApiError,
    AuthError,
    NetworkError,
    OrderRejected,
    ProtocolError,
    RateLimitError,
    RequestRejected,
    ServerError,
)
from multirun.redact import Redactor, install_log_redaction

log = logging.getLogger("multirun.client")

install_log_redaction()

T = TypeVar("T")

# A JSON object as decoded from a reply, and what we send (query parameters or JSON body).
Json = dict[str, Any]

WRITE_ENDPOINTS = frozenset({"open_order", "close_orders", "cancel_orders"})
# Failures after which a read is worth repeating.
RETRYABLE_READ = (NetworkError, ServerError, ProtocolError, RateLimitError)

# A 200 refusal about our session token (renew it and repeat the call), as opposed to one
# that only mentions a session ("market session closed": a refusal like any other).
_TOKEN_WORDS = re.compile(
    r"\btoken\b|\bsession\s+(?:expired|invalid|revoked|not\s+found)\b|\binvalid\s+session\b",
    re.IGNORECASE,
)

# The stop signal of the transport's pauses: never set (a pause always runs its course).
_NEVER = threading.Event()


class Transport:
    """Requests to one server over one pooled HTTP session.

    ``secrets`` returns every secret value a reply might echo (the api key, the session
    tokens); server text quoted in an error is masked of them. ``clock`` times deadlines
    and pauses (tests pass a manual one); ``rng`` draws the backoff jitter.
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
    ) -> None:
        self._base = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._secrets = secrets
        self._clock = clock
        self._rng = rng
        self._session = http_session(self._base)

    def close(self) -> None:
        """Close the HTTP session (its pooled connections). Idempotent."""
        self._session.close()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` on the clock."""
        self._clock.wait(_NEVER, seconds)

    def send(
        self, method: str, endpoint: str, payload: Json, read_timeout: float | None = None
    ) -> tuple[Json, datetime | None]:
        """Exactly one HTTP request. Returns (decoded JSON object, Date header)."""
        url = f"{self._base}/{endpoint}"
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        failure = ""
        # Redirects are not followed: requests would re-send the credentials (the query
        # string, or for 307/308 the JSON body) to a URL of the replier's choosing.
        try:
            if method == "GET":
                response = self._session.get(
                    url, params=payload, timeout=timeout, allow_redirects=False
                )
            else:
                response = self._session.post(
                    url, json=payload, timeout=timeout, allow_redirects=False
                )
        except requests.ConnectTimeout:
            failure = "connect timed out"
        except requests.Timeout:
            failure = f"no reply within {timeout[1]:g} s"
        except requests.ConnectionError:
            failure = "connection failed or dropped"
        except requests.RequestException as exc:
            failure = f"request failed ({type(exc).__name__})"
        if failure:  # raised here, outside the handler: requests' text holds the URL
            raise NetworkError(f"{endpoint}: {failure}", endpoint=endpoint)
        return self._decode(endpoint, response), _date_header(response)

    def retrying(self, endpoint: str, once: Callable[[float], T], deadline: float) -> T:
        """``once(read_timeout)`` until it succeeds, raises something not worth repeating,
        or the next attempt would start after ``deadline`` (monotonic). Pauses are drawn
        uniformly from [0, min(2 s, 0.05 s * 2**attempt)] (exponential backoff, full
        jitter); each attempt's read timeout is capped by the time left."""
        attempt = 0
        while True:
            left = deadline - self._clock.monotonic()
            try:
                return once(min(self.read_timeout, max(left, 0.2)))
            except RETRYABLE_READ as retryable:
                error: ApiError = retryable
            attempt += 1
            delay = self._rng.uniform(0.0, min(2.0, 0.05 * 2**attempt))
            if self._clock.monotonic() + delay >= deadline:
                raise error
            log.info("%s; retrying in %.2f s (attempt %d)", error, delay, attempt + 1)
            self.pause(delay)

    def parse(self, endpoint: str, parse: Callable[[Any], T], reply: object) -> T:
        """``parse(reply)``; a reply of the wrong shape is a ProtocolError."""
        try:
            return parse(reply)
        except models.ReplyError as bad:
            problem = self._server_text(str(bad))  # it may quote a key the server chose
        raise ProtocolError(f"{endpoint}: malformed reply: {problem}", endpoint=endpoint)

    def _decode(self, endpoint: str, response: requests.Response) -> Json:
        """The JSON object of a 200 reply; every other status mapped to its error."""
        status = response.status_code
        if status != 200:
            raise _status_error(endpoint, status, self._detail(response))
        body, ok = _json(response)
        if not ok or not isinstance(body, dict):
            raise ProtocolError(f"{endpoint}: HTTP 200 reply is not a JSON object",
                                endpoint=endpoint, status=status)  # fmt: skip
        if str(body.get("status", "")).upper() in ("FAIL", "FAILED", "ERROR"):
            detail = self._detail(response)
            if _TOKEN_WORDS.search(detail):
                raise AuthError(f"{endpoint}: HTTP 200 refusal{detail}",
                                endpoint=endpoint, status=status)  # fmt: skip
            kind = OrderRejected if endpoint in WRITE_ENDPOINTS else RequestRejected
            raise kind(f"{endpoint}: HTTP 200 refusal{detail}", endpoint=endpoint, status=status)
        return body

    def _detail(self, response: requests.Response) -> str:
        """``": <server message>"``, one line, with every secret masked, or ``""``."""
        body, ok = _json(response)
        if not ok or not isinstance(body, dict):
            return ""
        message = body.get("err_msg") or body.get("res") or body.get("message") or ""
        if not isinstance(message, str) or not message.strip():
            return ""
        return f": {self._server_text(message)}"

    def _server_text(self, text: str) -> str:
        return Redactor(self._secrets()).server_text(text)


def _status_error(endpoint: str, status: int, detail: str) -> ApiError:
    text = f"{endpoint}: HTTP {status}"
    if status in (401, 403):
        return AuthError(f"{text} (credentials or token refused){detail}",
                         endpoint=endpoint, status=status)  # fmt: skip
    if status == 429:
        return RateLimitError(f"{text} (throttled){detail}", endpoint=endpoint, status=status)
    if status >= 500:
        return ServerError(f"{text} (server error){detail}", endpoint=endpoint, status=status)
    if 400 <= status < 500:
        kind = OrderRejected if endpoint in WRITE_ENDPOINTS else RequestRejected
        return kind(f"{text} (refused){detail}", endpoint=endpoint, status=status)
    if 300 <= status < 400:
        return ProtocolError(f"{text} (redirect not followed: check the server URL)",
                             endpoint=endpoint, status=status)  # fmt: skip
    return ProtocolError(f"{text} (unexpected status)", endpoint=endpoint, status=status)


def _json(response: requests.Response) -> tuple[Any, bool]:
    """(decoded body, True), or (None, False) when the body is not JSON (an HTML error
    page, an empty or cut body, or nesting too deep for the decoder)."""
    try:
        return response.json(), True
    except (ValueError, RecursionError):
        return None, False


def http_session(base_url: str) -> requests.Session:
    """One pooled session, no urllib3 retries, the environment's proxy and CA settings.

    requests re-reads proxies and CA bundles from the environment on every request (a
    scan of ``os.environ``, about a fifth of a request's CPU); every request of ours goes
    to ``base_url``'s host, so they are read once, here, by requests' own rules.
    """
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0, pool_connections=1, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False
    return session


def _date_header(response: requests.Response) -> datetime | None:
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
