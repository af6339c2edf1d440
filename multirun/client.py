"""The ALGOGENE REST client: one object per account, one HTTP session per object.

What it guarantees (see docs/CONTRACTS.md for the interface):

- **Transport.** One :class:`requests.Session` (connections are reused), explicit
  ``(connect, read)`` timeouts on every request, no hidden urllib3 retries, no
  redirects followed (a 3xx is a :class:`ProtocolError`). GET
  parameters go in the query string; POST parameters go in a JSON body sent with
  ``Content-Type: application/json``.
- **Errors.** Every failure is one of :mod:`multirun.errors`: 401/403
  :class:`AuthError`, 429 :class:`RateLimitError`, 5xx :class:`ServerError`,
  connection trouble and timeouts :class:`NetworkError`, replies that are not the
  documented JSON :class:`ProtocolError`, other 4xx :class:`OrderRejected` (writes)
  or :class:`RequestRejected` (reads). Messages are one line, name the endpoint and
  the HTTP status, and never contain the api_key, a token or a request URL (which
  for GETs carries both): they are built from names, server text is scrubbed, and
  requests' own exceptions (whose text includes the URL) are never chained.
  urllib3's debug log lines carry URLs too; a filter on its loggers masks the
  ``api_key`` and ``token`` query parameters.
- **Reads** are retried on NetworkError, ServerError, RateLimitError and
  ProtocolError with exponential backoff and full jitter, for at most
  ``read_budget_s`` seconds in all.
- **Tokens** come from a :class:`~multirun.tokens.TokenManager` (fetched on first
  use, renewed ahead of expiry, clock skew tolerated). A 401 (or a refusal that
  names the token) on a call that carried a token renews the token once and repeats
  the call once: the server executed nothing, so this holds for ``open_order`` too.
  A 403 (forbidden) is not about the token and is raised at once.
- **Writes are never retried blindly.** ``open_order`` carries our ``orderRef``;
  when its outcome is unknown (timeout, dropped connection, 5xx, malformed reply),
  the client looks for that orderRef among pending and opened trades for
  ``reconcile_window_s`` before it decides: found means done, positively absent
  means send again with the same orderRef (``max_sends`` sends in all), and no
  answer at all raises :class:`OrderUncertain`. Closing and cancelling are
  idempotent and confirmed through the trade listings.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from multirun import models
from multirun.errors import (
    ApiError,
    AuthError,
    CloseUnconfirmed,
    NetworkError,
    OrderRejected,
    OrderUncertain,
    ProtocolError,
    RateLimitError,
    RequestRejected,
    ServerError,
)
from multirun.models import (
    AccountInfo,
    Balance,
    Bar,
    OrderAck,
    OrderStatus,
    Position,
    Quote,
    Trade,
)
from multirun.specs import Secret
from multirun.tokens import Clock, SessionReply, SystemClock, TokenManager

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ENDPOINTS = frozenset({"open_order", "close_orders", "cancel_orders"})
# Failures after which a write may or may not have been executed.
AMBIGUOUS = (NetworkError, ServerError, ProtocolError)
# Failures after which a read is worth repeating.
RETRYABLE_READ = (NetworkError, ServerError, ProtocolError, RateLimitError)
ORDER_TYPES = ("MKT", "LMT", "STOP")
SETTLE_MAX_SENDS = 10  # close/cancel requests per call, at most
SETTLE_RESEND_S = 1.0  # a trade still listed this long after its accepted request: again
SETTLE_RETRY_S = 0.2  # the same after a failed (ambiguous) request

_SECRET_PARAM = re.compile(r"\b((?:api_key|token)=)[^&\s'\"]*", re.IGNORECASE)
# A 200 refusal about our session token (renew it and repeat the call), as opposed to one
# that only mentions a session ("market session closed": a refusal like any other).
_TOKEN_WORDS = re.compile(
    r"\btoken\b|\bsession\s+(?:expired|invalid|revoked|not\s+found)\b|\binvalid\s+session\b",
    re.IGNORECASE,
)


def redact_query(text: str) -> str:
    """``text`` with the values of ``api_key=`` and ``token=`` parameters masked."""
    return _SECRET_PARAM.sub(r"\1****", text)


class RedactQueryFilter(logging.Filter):
    """Masks ``api_key``/``token`` query parameters in records (urllib3 logs whole URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler
            return True
        clean = redact_query(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")


def _install_log_redaction() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
            logger.addFilter(RedactQueryFilter())


_install_log_redaction()


class _NotSent(Exception):
    """Internal: a call failed before its request left (no session token could be had)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


def _ids(trade_ids: str | int | Iterable[str | int]) -> list[str]:
    """Trade ids as distinct, non-empty strings, in order."""
    items = [trade_ids] if isinstance(trade_ids, str | int) else list(trade_ids)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def _side(buysell: str | int) -> str:
    if isinstance(buysell, str) and buysell.strip().upper() in ("BUY", "SELL"):
        return buysell.strip().upper()
    if not isinstance(buysell, bool) and buysell in (1, -1):
        return "BUY" if buysell == 1 else "SELL"
    raise ValueError("buysell must be BUY, SELL, 1 or -1")


def _number(name: str, value: object) -> float:
    """``value`` as a finite float. Checked before sending: requests cannot encode NaN or
    infinity, and that failure would look like a lost send (reconciled, then resent)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def _api_time(moment: datetime | str) -> str:
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(models.API_TS_FORMAT)


class AlgogeneClient:
    """One ALGOGENE account, talked to over one HTTP session.

    ``api_key`` is a :class:`~multirun.specs.Secret`; it is revealed only into the
    request itself. ``clock``, ``sleep`` and ``rng`` exist for tests.
    """

    def __init__(
        self,
        base_url: str,
        user: str,
        api_key: Secret,
        runmode: str,
        accountid: str,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        read_budget_s: float = 20.0,
        token_margin_s: float = 60.0,
        reconcile_window_s: float = 5.0,
        max_sends: int = 3,
        send_window_s: float = 60.0,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(api_key, Secret):
            raise TypeError("api_key must be a multirun.specs.Secret")
        if max_sends < 1:
            raise ValueError("max_sends must be >= 1")
        self._base = base_url.rstrip("/")
        self._user = user
        self._api_key = api_key
        self._runmode = runmode
        self._accountid = str(accountid)
        self._timeouts = (connect_timeout, read_timeout)
        self._read_budget_s = read_budget_s
        self._reconcile_window_s = reconcile_window_s
        self._max_sends = max_sends
        self._send_window_s = send_window_s
        self._clock = clock or SystemClock()
        self._sleep = sleep or time.sleep
        self._rng = rng or random.Random()
        self._session = _http_session(self._base)
        self._tokens = TokenManager(self._fetch_session, margin_s=token_margin_s, clock=self._clock)
        self._seen_tokens: list[str] = []

    def __repr__(self) -> str:
        return f"AlgogeneClient(user={self._user!r}, accountid={self._accountid!r})"

    # --- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP session (its pooled connections). Idempotent."""
        self._session.close()

    def __enter__(self) -> AlgogeneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def token_expires_utc(self) -> datetime | None:
        """When the current session token expires by the server's word (naive UTC);
        None until the first call that needed one."""
        return self._tokens.expires_utc

    @property
    def session_fetches(self) -> int:
        """How many session tokens this client has fetched so far."""
        return self._tokens.fetches

    # --- reads --------------------------------------------------------------------

    def accounts(self) -> list[AccountInfo]:
        """``/accounts``: every account of the user in this runmode.
        Raises AuthError, RequestRejected, or (after retries) NetworkError, ServerError,
        RateLimitError, ProtocolError."""
        return self._read("accounts", {}, models.accounts_from_api)

    def balance(self) -> Balance:
        """``/balance`` of this account (fields at the top level or under ``res``).
        Raises as :meth:`accounts`."""
        return self._read("balance", {}, models.balance_from_api)

    def positions(self) -> list[Position]:
        """``/positions``: one entry per symbol with a non-zero net position.
        Raises as :meth:`accounts`."""
        return self._read("positions", {}, models.positions_from_api)

    def opened_trades(self, trade_id: str | int | None = None) -> list[Trade]:
        """``/opened_trades``: this account's open trades, or only ``trade_id``'s.
        Raises as :meth:`accounts`."""
        params = {} if trade_id is None else {"tradeID": str(trade_id)}
        return self._read("opened_trades", params, models.trades_from_api)

    def pending_trades(self) -> list[Trade]:
        """``/pending_trades``: this account's unfilled limit/stop orders.
        Raises as :meth:`accounts`."""
        return self._read("pending_trades", {}, models.trades_from_api)

    def query_order(self, trade_id: str | int) -> OrderStatus:
        """``/query_order``: one order's status. Raises RequestRejected for an unknown
        trade, otherwise as :meth:`accounts`."""
        params = {"tradeID": str(trade_id)}
        return self._read("query_order", params, models.order_status_from_api)

    def realtime_price(self, symbols: str | Iterable[str]) -> dict[str, Quote]:
        """``/realtime_price``: the latest quote per symbol, keyed by symbol (no token
        needed). Raises RequestRejected when a requested symbol has no quote, otherwise
        as :meth:`accounts`."""
        names = [symbols] if isinstance(symbols, str) else list(symbols)
        params = {"symbols": ",".join(names)}
        quotes = self._read("realtime_price", params, models.quotes_from_api, auth=False)
        missing = [name for name in names if name not in quotes]
        if missing:
            raise RequestRejected(
                f"realtime_price: no quote for {', '.join(missing)}", endpoint="realtime_price"
            )
        return quotes

    def history_price(
        self, instrument: str, interval: str, count: int, before: datetime | str | None = None
    ) -> list[Bar]:
        """``/history_price``: up to ``count`` bars of ``interval`` (``M``, ``H``...),
        ascending, strictly before ``before`` (a UTC datetime or API timestamp; omitted:
        the latest bars). Raises as :meth:`accounts`."""
        params: dict[str, Any] = {"instrument": instrument, "interval": interval, "count": count}
        if before is not None:
            params["timestamp"] = _api_time(before)
        return self._read("history_price", params, models.bars_from_api, auth=False)

    def find_order(self, order_ref: str) -> Trade | None:
        """The pending or opened trade carrying ``order_ref`` (pending trades are read
        first, so an order filling in between is still seen), or None. If several carry
        it, logs a warning naming all of them and returns the first (opened before
        pending). Raises as :meth:`accounts`."""
        found = self._find_all(order_ref, None)
        return found[0][0] if found else None

    # --- writes -------------------------------------------------------------------

    def open_order(
        self,
        instrument: str,
        buysell: str | int,
        volume: float,
        order_ref: str,
        *,
        ordertype: str = "MKT",
        price: float | None = None,
        timeinforce: float | None = None,
        take_profit: float | None = None,
        stop_loss: float | None = None,
        holdtime: float | None = None,
    ) -> OrderAck:
        """``/open_order`` with our ``order_ref``, never placing it twice.

        Returns the server's acknowledgement, or, when the reply was lost but the order
        is found on the server by ``order_ref``, an ack built from that trade (status
        ``FILLED`` if opened, ``PENDING`` if pending). After an ambiguous failure
        (NetworkError, ServerError, ProtocolError) it reconciles before any resend and
        resends, with the same ``order_ref``, only when the order is positively absent,
        up to ``max_sends`` sends in all, and none starting more than ``send_window_s``
        after the call began (so a process that dies meanwhile stops sending within
        that bound plus one send).

        Raises ValueError for bad arguments (nothing sent); OrderRejected (the server
        refused it), AuthError, RateLimitError: not executed; OrderUncertain: it may or
        may not have been placed and the server could not be asked (do not send it
        again before a later :meth:`find_order` settles it); NetworkError/ServerError/
        ProtocolError: every send failed and each time the order was confirmed absent,
        so it is not on the server.
        """
        body = self._order_body(
            instrument, buysell, volume, order_ref, ordertype, price, timeinforce,
            take_profit, stop_loss, holdtime,
        )  # fmt: skip
        last_send = self._clock.monotonic() + self._send_window_s
        send = 0
        while True:
            send += 1
            outcome = self._try_open(body, order_ref)
            if isinstance(outcome, OrderAck):
                return outcome
            log.warning("open_order %s: %s; reconciling by orderRef", order_ref, outcome)
            found = self._reconcile(order_ref, outcome)
            if found is not None:
                return found
            if send >= self._max_sends or self._clock.monotonic() >= last_send:
                break
            log.warning(
                "open_order %s: not on the server after %.1f s; sending it again (%d of %d)",
                order_ref, self._reconcile_window_s, send + 1, self._max_sends,
            )  # fmt: skip
        raise type(outcome)(
            f"open_order {order_ref}: not placed: {send} send(s) failed and each time the "
            f"order was confirmed absent (last: {outcome})",
            endpoint="open_order",
            status=outcome.status,
        )

    def close_trades(self, trade_ids: Iterable[str | int] | str | int, *,
                     confirm_timeout_s: float = 10.0) -> None:  # fmt: skip
        """``/close_orders`` for ``trade_ids``, then wait until ``/opened_trades`` no
        longer lists them. Idempotent: a trade already closed (or unknown to the server)
        counts as closed; a market order acknowledged but not filled yet is waited for and
        closed once it fills. After an ambiguous failure, a refusal, or a trade still
        listed a second after its request, the request is sent again for the trades still
        open (closing by trade id cannot open anything).

        Raises CloseUnconfirmed when a trade is still open or unfilled after
        ``confirm_timeout_s`` (a pending limit/stop order never fills on request: cancel
        it instead); OrderRejected when the server refuses to close a trade it lists as
        open; AuthError, RateLimitError as sent back."""
        self._settle("close_orders", "opened_trades", _ids(trade_ids), confirm_timeout_s)

    def cancel_orders(self, trade_ids: Iterable[str | int] | str | int, *,
                      confirm_timeout_s: float = 10.0) -> None:  # fmt: skip
        """``/cancel_orders`` for pending ``trade_ids``, then wait until
        ``/pending_trades`` no longer lists them. Idempotent: an order no longer pending
        counts as done (one that filled meanwhile is an open trade now: see
        :meth:`opened_trades`). Raises like :meth:`close_trades`."""
        self._settle("cancel_orders", "pending_trades", _ids(trade_ids), confirm_timeout_s)

    # --- open_order helpers ----------------------------------------------------

    def _order_body(
        self,
        instrument: str,
        buysell: str | int,
        volume: float,
        order_ref: str,
        ordertype: str,
        price: float | None,
        timeinforce: float | None,
        take_profit: float | None,
        stop_loss: float | None,
        holdtime: float | None,
    ) -> dict[str, Any]:
        if not isinstance(order_ref, str) or not order_ref.strip():
            raise ValueError("open_order needs a non-empty order_ref")
        if order_ref != order_ref.strip():
            # a server that trims it would list a ref we could never match: sent again
            raise ValueError("order_ref must not start or end with whitespace")
        if ordertype not in ORDER_TYPES:
            raise ValueError(f"ordertype must be one of {', '.join(ORDER_TYPES)}")
        if ordertype != "MKT" and price is None:
            raise ValueError(f"a {ordertype} order needs a price")
        if _number("volume", volume) <= 0:
            raise ValueError("volume must be > 0")
        body: dict[str, Any] = {
            "instrument": instrument,
            "buysell": _side(buysell),
            "volume": float(volume),
            "ordertype": ordertype,
            "orderRef": order_ref,
        }
        optional = {
            "price": price,
            "timeinforce": timeinforce,
            "takeProfitLevel": take_profit,
            "stopLossLevel": stop_loss,
            "holdtime": holdtime,
        }
        given = {k: v for k, v in optional.items() if v is not None}
        for name, value in given.items():
            _number(name, value)
        body.update(given)
        return body

    def _try_open(self, body: dict[str, Any], order_ref: str) -> OrderAck | ApiError:
        """One send (plus the token-refusal resend). Returns the ack, or the ambiguous
        error; raises definitive errors (not executed)."""
        try:
            reply = self._write("open_order", body)
            return self._parse("open_order", lambda r: models.ack_from_api(r, order_ref), reply)
        except _NotSent as not_sent:
            error: ApiError = not_sent.error
        except AMBIGUOUS as ambiguous:
            return ambiguous
        raise error

    def _reconcile(self, order_ref: str, cause: ApiError) -> OrderAck | None:
        """Look for ``order_ref`` until found, or until a lookup that began after the
        window ended finds nothing (None). Raises OrderUncertain when no lookup that
        could decide succeeds within the window plus ``read_budget_s``."""
        start = self._clock.monotonic()
        window_end = start + self._reconcile_window_s
        give_up = window_end + self._read_budget_s
        interval = 0.2
        while True:
            began = self._clock.monotonic()
            try:
                found = self._find_all(order_ref, give_up)
            except (ApiError, _NotSent) as exc:
                error = exc.error if isinstance(exc, _NotSent) else exc
                if self._clock.monotonic() >= give_up:
                    raise self._uncertain(order_ref, cause, error) from None
            else:
                if found:
                    trade, where = found[0]
                    status = "FILLED" if where == "opened_trades" else "PENDING"
                    log.info("open_order %s: found on the server as trade %s (%s)",
                             order_ref, trade.trade_id, where)  # fmt: skip
                    return OrderAck(trade.trade_id, status, trade.timestamp, order_ref)
                if began >= window_end:
                    return None
            now = self._clock.monotonic()  # the next lookup must begin after the window
            self._sleep(max(0.0, min(interval, window_end - now)) if now < window_end else interval)
            interval = min(interval * 1.5, 1.0)

    def _uncertain(self, order_ref: str, cause: ApiError, error: ApiError) -> OrderUncertain:
        return OrderUncertain(
            f"open_order {order_ref}: outcome unknown ({cause}); reconciling by orderRef "
            f"failed too ({error}); do not resend before it is settled",
            endpoint="open_order",
            status=cause.status,
        )

    def _find_all(self, order_ref: str, deadline: float | None) -> list[tuple[Trade, str]]:
        """Every (trade, listing) carrying ``order_ref``: opened ones first. Pending is
        read before opened, so an order moving from one to the other is not missed."""
        pending = self._read("pending_trades", {}, models.trades_from_api, deadline=deadline)
        opened = self._read("opened_trades", {}, models.trades_from_api, deadline=deadline)
        found = [(t, "opened_trades") for t in opened if t.order_ref == order_ref]
        found += [(t, "pending_trades") for t in pending if t.order_ref == order_ref]
        if len(found) > 1:
            log.warning(
                "orderRef %s is carried by %d trades: %s; using %s",
                order_ref, len(found), ", ".join(t.trade_id for t, _ in found),
                found[0][0].trade_id,
            )  # fmt: skip
        return found

    # --- close/cancel helpers --------------------------------------------------
    #
    # Per trade id, what we knew when we last sent the request for it: "seen" (listed:
    # open, or pending for a cancel), "unfilled" (query_order says PENDING: a market
    # order not filled yet, which close_orders cannot touch), or "unknown".

    def _settle(self, endpoint: str, listing: str, ids: list[str], timeout: float) -> None:
        """Send ``endpoint`` for ``ids`` and poll ``listing`` until none is left in it,
        resending (idempotent) for trades still listed; see close_trades/cancel_orders."""
        deadline = self._clock.monotonic() + timeout
        extended = False
        known: dict[str, str] = dict.fromkeys(ids, "unknown")
        last: dict[str, tuple[float, str, ApiError | None]] = {}
        todo, to_send, sends, interval = list(ids), list(ids), 0, 0.05
        while todo:
            stalled = False  # a reply held past the read timeout, or no listing to go by
            if to_send and sends < SETTLE_MAX_SENDS:
                error, acknowledged = self._send_ids(endpoint, to_send)
                stalled = isinstance(error, NetworkError)
                sends += 1
                sent_at = self._clock.monotonic()
                last.update({i: (sent_at, known[i], error) for i in to_send})
                known.update(dict.fromkeys(acknowledged, "seen"))
            listed = self._listed(listing, deadline)
            stalled = stalled or listed is None
            to_send, before = [], dict(known)
            if listed is not None:
                todo = [i for i in todo if not self._gone(i, listed, known, endpoint)]
                to_send = self._due(todo, listed, last)
                known.update({i: "seen" for i in todo if i in listed})
            now = self._clock.monotonic()
            if todo and now >= deadline and stalled and not extended:
                # A held reply used up the wait (the server may have refused the close of
                # a trade that had not filled yet, or the listing could not be read): one
                # more round of sending and reading decides, not the clock.
                deadline, extended = now + self._timeouts[1], True
                continue
            if todo and now >= deadline:
                raise CloseUnconfirmed(
                    f"{endpoint}: trade(s) {', '.join(todo)} still listed in {listing} or "
                    f"not filled after {timeout:g} s",
                    endpoint=endpoint,
                )
            # a trade query_order just found filled: the next listing decides it, at once
            learned = listed is not None and any(
                known[i] == "seen" != before[i] and i not in listed for i in todo
            )
            if todo and not to_send and not learned:
                self._sleep(min(interval, deadline - now))
                interval = min(interval * 2, 0.5)

    def _gone(self, trade_id: str, listed: set[str], known: dict[str, str], endpoint: str) -> bool:
        """Whether ``trade_id`` is done with. For a close, a trade missing from
        opened_trades is closed only if it had filled before that listing was read (seen
        listed earlier, or query_order said so); an unfilled market order is not."""
        if trade_id in listed:
            return False
        if endpoint != "close_orders" or known[trade_id] == "seen":
            return True
        try:
            status = self.query_order(trade_id).status
        except RequestRejected:
            return True  # the server knows no such trade: nothing to close
        except (ApiError, _NotSent):
            return False
        known[trade_id] = "unfilled" if status.upper() == "PENDING" else "seen"
        return False  # filled: the next listing, read after this query, decides

    def _due(
        self, todo: list[str], listed: set[str], last: dict[str, tuple[float, str, ApiError | None]]
    ) -> list[str]:
        """The listed trades to send the request for again; raises a refusal of a trade
        that was listed when we sent it."""
        now = self._clock.monotonic()
        due = []
        for trade_id in todo:
            if trade_id not in listed:
                continue
            sent_at, known_then, error = last[trade_id]
            if isinstance(error, OrderRejected) and known_then == "seen":
                raise error
            if known_then != "seen" and isinstance(error, OrderRejected):
                due.append(trade_id)  # refused before it filled: filled now
            else:
                pause = SETTLE_RESEND_S if error is None else SETTLE_RETRY_S
                if known_then == "unfilled" or now - sent_at >= pause:
                    due.append(trade_id)
        return due

    def _send_ids(self, endpoint: str, ids: list[str]) -> tuple[ApiError | None, set[str]]:
        """POST ``tradeIDs``. Returns (None, the ids the reply names as submitted) when
        accepted, (the ambiguous or refusal error, empty) otherwise."""
        try:
            reply = self._write(endpoint, {"tradeIDs": ",".join(ids)})
            res = reply.get("res")
            named = {i for i in ids if isinstance(res, str) and f"'{i}'" in res}
            return None, named
        except _NotSent as not_sent:
            error: ApiError = not_sent.error
        except (*AMBIGUOUS, OrderRejected) as failed:
            log.info("%s; checking the trades before sending again", failed)
            return failed, set()
        raise error

    def _listed(self, listing: str, deadline: float) -> set[str] | None:
        """The trade ids in ``listing``, or None when it could not be read."""
        try:
            trades = self._read(listing, {}, models.trades_from_api, deadline=deadline)
        except (ApiError, _NotSent) as failed:
            log.info("%s: could not read it to confirm (%s)", listing, failed)
            return None
        return {t.trade_id for t in trades}

    # --- plumbing ------------------------------------------------------------------

    def _read(
        self,
        endpoint: str,
        params: dict[str, Any],
        parse: Callable[[Any], T],
        *,
        auth: bool = True,
        deadline: float | None = None,
    ) -> T:
        """GET ``endpoint`` and parse it, retrying retryable failures with exponential
        backoff and full jitter until ``deadline`` (default: now + read_budget_s)."""

        def once(read_timeout: float) -> T:
            reply = self._call("GET", endpoint, params, auth=auth, read_timeout=read_timeout)
            return self._parse(endpoint, parse, reply)

        if deadline is None:
            deadline = self._clock.monotonic() + self._read_budget_s
        try:
            return self._retrying(endpoint, once, deadline)
        except _NotSent as not_sent:  # the session fetch already spent its own budget
            error = not_sent.error
        raise error

    def _retrying(self, endpoint: str, once: Callable[[float], T], deadline: float) -> T:
        """``once(read_timeout)`` until it succeeds, raises something not worth repeating,
        or the next attempt would start after ``deadline``. Pauses are drawn uniformly
        from [0, min(2 s, 0.05 s * 2**attempt)] (exponential backoff, full jitter); each
        attempt's read timeout is capped by the time left."""
        attempt = 0
        while True:
            left = deadline - self._clock.monotonic()
            try:
                return once(min(self._timeouts[1], max(left, 0.2)))
            except RETRYABLE_READ as retryable:
                error: ApiError = retryable
            attempt += 1
            delay = self._rng.uniform(0.0, min(2.0, 0.05 * 2**attempt))
            if self._clock.monotonic() + delay >= deadline:
                raise error
            log.info("%s; retrying in %.2f s (attempt %d)", error, delay, attempt + 1)
            self._sleep(delay)

    def _write(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        """POST ``endpoint`` once (twice if the token was refused). Raises _NotSent when
        no token could be had, so the caller knows nothing was sent."""
        return self._call("POST", endpoint, params, auth=True)

    def _call(
        self,
        method: str,
        endpoint: str,
        params: dict[str, Any],
        *,
        auth: bool,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One request with credentials; with ``auth``, a refused token is renewed and
        the request repeated once."""
        payload = {"user": self._user, "api_key": self._api_key.reveal(), **params}
        if not auth:
            return self._send(method, endpoint, payload, read_timeout)[0]
        token = self._token()
        try:
            return self._send(method, endpoint, {**payload, **self._scope(endpoint, token)},
                              read_timeout)[0]  # fmt: skip
        except AuthError as refused:
            if refused.status == 403:
                raise  # forbidden (e.g. the account): a new token would not change that
            log.info("%s: session token refused; renewing it and trying once more", endpoint)
            self._tokens.invalidate(token)
        token = self._token()
        return self._send(method, endpoint, {**payload, **self._scope(endpoint, token)},
                          read_timeout)[0]  # fmt: skip

    def _scope(self, endpoint: str, token: str) -> dict[str, str]:
        scope = {"runmode": self._runmode, "token": token}
        if endpoint != "accounts":
            scope["accountid"] = self._accountid
        return scope

    def _token(self) -> str:
        try:
            token = self._tokens.get()
        except AuthError:
            raise
        except ApiError as failed:
            raise _NotSent(failed) from None
        if token not in self._seen_tokens:
            self._seen_tokens = [*self._seen_tokens[-7:], token]
        return token

    def _fetch_session(self) -> SessionReply:
        """``/session`` (retried like any read); the token and the reply's Date header."""
        payload = {"user": self._user, "api_key": self._api_key.reveal()}

        def once(read_timeout: float) -> SessionReply:
            reply, date = self._send("GET", "session", payload, read_timeout)
            return SessionReply(self._parse("session", models.token_from_api, reply), date)

        return self._retrying("session", once, self._clock.monotonic() + self._read_budget_s)

    def _send(
        self, method: str, endpoint: str, payload: dict[str, Any], read_timeout: float | None
    ) -> tuple[dict[str, Any], datetime | None]:
        """Exactly one HTTP request. Returns (decoded JSON object, Date header)."""
        url = f"{self._base}/{endpoint}"
        timeout = (self._timeouts[0], read_timeout or self._timeouts[1])
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

    def _decode(self, endpoint: str, response: requests.Response) -> dict[str, Any]:
        """The JSON object of a 200 reply; every other status mapped to its error."""
        status = response.status_code
        if status != 200:
            raise self._status_error(endpoint, status, self._detail(response))
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

    def _status_error(self, endpoint: str, status: int, detail: str) -> ApiError:
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

    def _detail(self, response: requests.Response) -> str:
        """``": <server message>"``, one line, scrubbed of secrets, or ``""``."""
        body, ok = _json(response)
        if not ok or not isinstance(body, dict):
            return ""
        message = body.get("err_msg") or body.get("res") or body.get("message") or ""
        if not isinstance(message, str) or not message.strip():
            return ""
        return f": {self._scrub(message)}"

    def _scrub(self, text: str) -> str:
        """``text`` on one line, at most 160 characters, with every secret masked."""
        secrets = [self._api_key.reveal(), *self._seen_tokens]
        if self._tokens.current:
            secrets.append(self._tokens.current)
        for secret in secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "****")
        text = " ".join(redact_query(text).split())
        return text if len(text) <= 160 else text[:157] + "..."

    def _parse(self, endpoint: str, parse: Callable[[Any], T], reply: Any) -> T:
        try:
            return parse(reply)
        except models.ReplyError as bad:
            problem = self._scrub(str(bad))  # it may quote a key the server chose
        raise ProtocolError(f"{endpoint}: malformed reply: {problem}", endpoint=endpoint)


def _json(response: requests.Response) -> tuple[Any, bool]:
    """(decoded body, True), or (None, False) when the body is not JSON (an HTML error
    page, an empty or cut body, or nesting too deep for the decoder)."""
    try:
        return response.json(), True
    except (ValueError, RecursionError):
        return None, False


def _http_session(base_url: str) -> requests.Session:
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
