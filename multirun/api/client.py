"""The ALGOGENE API for one account: typed calls, session tokens, writes never doubled.

What it guarantees (the transport's own guarantees, timeouts, error mapping and read
retries, are in :mod:`multirun.api.transport`):

- **Reads** are retried on NetworkError, ServerError, RateLimitError and
  ProtocolError with exponential backoff and full jitter, for at most
  ``read_budget_s`` seconds in all.
- **Tokens** come from a :class:`~multirun.api.tokens.TokenManager` (fetched on first
  use, renewed ahead of expiry, clock skew tolerated; shared by the processes of one
  user through ``token_file``, see :mod:`multirun.api.tokens`). A 401 (or a refusal that
  names the token) on a call that carried a token renews the token once and repeats
  the call once; for ``open_order`` only after looking for its orderRef (a server may
  execute an order and then refuse the token). A 403 (forbidden) is raised at once.
- **Secrets.** Server text quoted in an error is masked of the api key and of every
  session token this client has held (:class:`multirun.core.redact.Redactor`).
- **Writes are never retried blindly.** ``open_order`` carries our ``orderRef``;
  when its outcome is unknown (timeout, dropped connection, 5xx, malformed reply, a
  refusal after a resend), the client looks for that orderRef among pending and opened
  trades and in the transaction history (``/strategy_trade``) with backoff for
  ``reconcile_window_s``: found means done; not found raises :class:`OrderUncertain`
  and the order is **never sent again** (a server may execute it late: the worker keeps
  watching for it, see :mod:`multirun.account.reconcile`). A first send that never connected
  (refused, name not resolved, connect timed out: :class:`~multirun.api.transport.NotConnected`)
  sent nothing: it is raised as not placed. Closing and cancelling are
  idempotent and confirmed through the trade listings (:mod:`multirun.api.confirm`).
- **Deadlines.** Every request has a total deadline (``request_deadline_s``) and its
  reply a size cap (``max_reply_bytes``): see :mod:`multirun.api.transport`. A request cut
  by its deadline is a NetworkError, so an ``open_order`` cut that way is reconciled by
  orderRef like any lost reply.
- **Interrupts.** With ``interrupt`` set (the worker's stop flag), retry pauses,
  reconciliation pauses and close/cancel confirmation polls end at once with
  :class:`~multirun.core.errors.Interrupted`; a request in flight is never cut by it. An
  ``open_order`` whose outcome is unknown when the interrupt comes raises OrderUncertain
  (it is never abandoned as "not placed" unless confirmed absent, and never resent).
  ``with client.interrupting(False):`` runs a block (on_stop's close) ignoring it.
- **Heartbeat.** ``heartbeat`` (optional) is called before every HTTP request.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from multirun.api import models
from multirun.api.confirm import ABSENT, FILLED, PENDING, UNANSWERED, Fill, settle
from multirun.api.models import (
    AccountInfo,
    Balance,
    Bar,
    OrderAck,
    OrderStatus,
    Position,
    Quote,
    Trade,
    Transaction,
)
from multirun.api.params import OrderBody, TradeIds, api_time, order_body, trade_ids_of
from multirun.api.placing import AMBIGUOUS, NotSent, Placer
from multirun.api.polls import SETTLE_POLLS, Learned, Schedule
from multirun.api.tokens import SessionReply, SharedTokenFile, TokenManager
from multirun.api.transport import (
    MAX_REPLY_BYTES,
    REQUEST_DEADLINE_S,
    Json,
    RequestHook,
    RequestSender,
    Transport,
)
from multirun.core.clock import SYSTEM_CLOCK, Clock, StopSignal
from multirun.core.errors import (
    ApiError,
    AuthError,
    OrderRejected,
    RateLimitError,
    RequestRejected,
)
from multirun.core.redact import Secret
from multirun.core.statedir import StateDir

log = logging.getLogger(__name__)

T = TypeVar("T")

SEEN_TOKENS = 8  # session tokens remembered (and masked in server text) per client


class AlgogeneClient:
    """One ALGOGENE account, talked to over one HTTP session.

    ``api_key`` is a :class:`~multirun.core.redact.Secret`; it is revealed only into the
    request itself. ``clock`` (deadlines, pauses, token lifetimes) and ``rng`` (backoff
    jitter) exist for tests. ``request_deadline_s`` bounds each request from connect to
    last byte, ``max_reply_bytes`` each reply body (decompressed); ``interrupt`` is a
    stop flag that ends waits (see the module docstring); ``heartbeat`` is called before
    every request, ``on_request`` after each with its endpoint and outcome (telemetry).
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
        clock: Clock | None = None,
        rng: random.Random | None = None,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        interrupt: StopSignal | None = None,
        heartbeat: Callable[[], None] | None = None,
        token_file: Path | None = None,
        on_request: RequestHook | None = None,
        transport: Transport | None = None,
    ) -> None:
        if not isinstance(api_key, Secret):
            raise TypeError("api_key must be a multirun.core.redact.Secret")
        self._user = user
        self._api_key = api_key
        self._runmode = runmode
        self._accountid = str(accountid)
        self._read_budget_s = read_budget_s
        self._reconcile_window_s = reconcile_window_s
        self._clock = clock or SYSTEM_CLOCK
        self._transport = RequestSender(
            base_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            secrets=self._secrets,
            clock=self._clock,
            rng=rng or random.Random(),
            request_deadline_s=request_deadline_s,
            max_reply_bytes=max_reply_bytes,
            interrupt=interrupt,
            heartbeat=heartbeat,
            on_request=on_request,
            transport=transport,
        )
        shared = None if token_file is None else SharedTokenFile(token_file)
        self._tokens = TokenManager(
            self._fetch_session, margin_s=token_margin_s, clock=self._clock, shared=shared
        )
        self._seen_tokens: list[str] = []
        self._close_polls = Learned(SETTLE_POLLS)  # close_trades' polls learn per account
        # orderRef -> its history rows, read by a close confirmation that found the close
        self._close_history: dict[str, list[Transaction]] = {}

    def __repr__(self) -> str:
        return f"AlgogeneClient(user={self._user!r}, accountid={self._accountid!r})"

    # --- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP session (its pooled connections). Idempotent."""
        self._transport.close()

    def __enter__(self) -> AlgogeneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def interrupt(self) -> StopSignal | None:
        """The stop flag that ends this client's waits (None: waits run their course)."""
        return self._transport.interrupt

    @interrupt.setter
    def interrupt(self, stop: StopSignal | None) -> None:
        self._transport.interrupt = stop

    @contextlib.contextmanager
    def interrupting(self, enabled: bool) -> Iterator[None]:
        """``with client.interrupting(False):`` the block's waits ignore the interrupt
        (on_stop's close, which runs because the stop flag is set); True restores it."""
        with self._transport.interrupting(enabled):
            yield

    def share_tokens(self, state_dir: Path) -> None:
        """Share session tokens with this user's other processes on this host through
        ``state_dir``'s token file (see :mod:`multirun.api.tokens`); before the first call."""
        path = StateDir(state_dir).token_file(self._transport.base_url, self._user)
        self._tokens.share(SharedTokenFile(path))

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
            params["timestamp"] = api_time(before)
        return self._read("history_price", params, models.bars_from_api, auth=False)

    def strategy_trades(self, order_ref: str | None = None, acdate: str = "") -> list[Transaction]:
        """``/strategy_trade``: the account's transactions (closed trades included), in
        ascending time; ``acdate`` "YYYY-MM-DD" or "" for the whole history; with
        ``order_ref``, only that orderRef's (filtered here too, should the server ignore
        the filter). The rows of an orderRef that a close confirmation just read showing
        its close (:meth:`close_trades`) are returned once without a request: a closed
        trade's history no longer changes. Raises as :meth:`accounts`."""
        if order_ref is not None and not acdate and order_ref in self._close_history:
            return self._close_history.pop(order_ref)  # a close confirmation's read, once
        params: dict[str, Any] = {"acdate": acdate, "runtime_id": self._accountid}
        if order_ref is not None:
            params["orderRef"] = order_ref
        rows = self._read("strategy_trade", params, models.transactions_from_api)
        return rows if order_ref is None else [r for r in rows if r.order_ref == order_ref]

    def find_order(self, order_ref: str) -> Trade | None:
        """The pending or opened trade carrying ``order_ref`` (pending trades are read
        first, so an order filling in between is still seen), or None. If several carry
        it, logs a warning naming all of them and returns the first (opened before
        pending). Raises as :meth:`accounts`."""
        found = self._placer().find_all(order_ref, None)
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
        is found on the server by ``order_ref``, an ack built from what was found
        (status ``FILLED`` if opened, ``PENDING`` if pending, ``CLOSED`` if only the
        history has it). After an ambiguous failure (NetworkError, ServerError,
        ProtocolError) it looks for it and never sends it again. A token refusal is
        followed by a lookup by orderRef and one resend only when it is absent; a second
        refusal is ambiguous like a lost reply.

        Raises ValueError for bad arguments (nothing sent); OrderRejected (the server
        refused it), RateLimitError, a 403 AuthError, NotConnected (the first send made
        no connection), or any error while fetching a session token: not executed;
        OrderUncertain: it may or may not have been placed
        (not found within ``reconcile_window_s``, or a stop request came while looking):
        never send it again; watch the listings and the history for it.
        Interrupted: only before anything was sent (waiting for a session token).
        """
        body = order_body(
            instrument, buysell, volume, order_ref, ordertype, price, timeinforce,
            take_profit, stop_loss, holdtime,
        )  # fmt: skip
        return self._placer().place(body, order_ref)

    def close_trades(self, trade_ids: TradeIds, *, confirm_timeout_s: float = 10.0,
                     polls: Schedule | None = None,
                     order_ref: str | None = None) -> None:  # fmt: skip
        """``/close_orders`` for ``trade_ids``, then wait until ``/opened_trades`` no
        longer lists them. Idempotent: a trade already closed (or unknown to the server)
        counts as closed; a market order acknowledged but not filled yet is waited for and
        closed once it fills. After an ambiguous failure, a refusal, or a trade still
        listed a second after its request, the request is sent again for the trades still
        open (closing by trade id cannot open anything).

        ``polls``: the confirmation's schedule; by default one that learns how soon this
        account's closes show (:class:`multirun.api.polls.Learned`: its first read then).

        ``order_ref``: the orderRef of the one trade closed. Then each confirmation poll
        reads that orderRef's history (``/strategy_trade``) first: its close row is the
        server's word that the trade is closed (as the reconciler takes it), and the rows
        are what pricing reads next for the close's exact P&L (:meth:`strategy_trades`
        hands them over once instead of asking again). One request where the listing
        and then the history made two; a history without the close yet is followed by
        the listing read, as without ``order_ref``.

        Raises CloseUnconfirmed when a trade is still open or unfilled after
        ``confirm_timeout_s`` (a pending limit/stop order never fills on request: cancel
        it instead); OrderRejected when the server refuses to close a trade it lists as
        open; AuthError, RateLimitError as sent back."""
        ids = trade_ids_of(trade_ids)
        history = (ids[0], order_ref) if len(ids) == 1 and order_ref else None
        self._settle("close_orders", "opened_trades", ids, confirm_timeout_s,
                     polls or self._close_polls, history)  # fmt: skip

    def cancel_orders(self, trade_ids: TradeIds, *, confirm_timeout_s: float = 10.0) -> None:
        """``/cancel_orders`` for pending ``trade_ids``, then wait until
        ``/pending_trades`` no longer lists them. Idempotent: an order no longer pending
        counts as done (one that filled meanwhile is an open trade now: see
        :meth:`opened_trades`). Raises like :meth:`close_trades`."""
        self._settle("cancel_orders", "pending_trades", trade_ids_of(trade_ids), confirm_timeout_s)

    # --- close/cancel: the server side of multirun.api.confirm ----------------------

    def _settle(self, endpoint: str, listing: str, ids: list[str], timeout: float,
                polls: Schedule | None = None,
                history: tuple[str, str] | None = None) -> None:  # fmt: skip
        desk = _Desk(self, endpoint, listing, history)
        settle(desk, ids, timeout, clock=self._clock, hold_s=self._transport.read_timeout,
               interrupt=self._transport.active_interrupt(), polls=polls)  # fmt: skip

    # --- plumbing ------------------------------------------------------------------

    def _placer(self) -> Placer:
        return Placer(
            _OrderDesk(self), clock=self._clock, reconcile_window_s=self._reconcile_window_s,
            read_budget_s=self._read_budget_s,
        )  # fmt: skip

    def _read(
        self,
        endpoint: str,
        params: Json,
        parse: Callable[[Any], T],
        *,
        auth: bool = True,
        deadline: float | None = None,
    ) -> T:
        """GET ``endpoint`` and parse it, retrying retryable failures with exponential
        backoff and full jitter until ``deadline`` (default: now + read_budget_s)."""

        def once(read_timeout: float, total_s: float) -> T:
            reply = self._call("GET", endpoint, params, auth=auth, read_timeout=read_timeout,
                               deadline_s=total_s)  # fmt: skip
            return self._transport.parse(endpoint, parse, reply)

        if deadline is None:
            deadline = self._clock.monotonic() + self._read_budget_s
        try:
            return self._transport.retrying(endpoint, once, deadline)
        except NotSent as not_sent:  # the session fetch already spent its own budget
            error = not_sent.error
        raise error

    def _write(self, endpoint: str, params: Json) -> Json:
        """POST ``endpoint`` once (twice if the token was refused). Raises NotSent when
        no token could be had, so the caller knows nothing was sent."""
        return self._call("POST", endpoint, params, auth=True)

    def _write_once(self, endpoint: str, params: Json) -> Json:
        """POST ``endpoint`` once; a refused token is renewed (forgotten) and the
        AuthError raised, so the caller decides whether to send again."""
        return self._call("POST", endpoint, params, auth=True, resend=False)

    def _call(
        self,
        method: str,
        endpoint: str,
        params: Json,
        *,
        auth: bool,
        read_timeout: float | None = None,
        deadline_s: float | None = None,
        resend: bool = True,
    ) -> Json:
        """One request with credentials; with ``auth``, a refused token is renewed and
        the request repeated once (with ``resend``; otherwise the refusal is raised)."""

        def send(body: Json) -> Json:
            return self._transport.send(method, endpoint, body, read_timeout, deadline_s)[0]

        payload = {"user": self._user, "api_key": self._api_key.reveal(), **params}
        if not auth:
            return send(payload)
        token = self._token()
        try:
            return send({**payload, **self._scope(endpoint, token)})
        except AuthError as refused:
            if refused.status == 403:
                raise  # forbidden (e.g. the account): a new token would not change that
            self._tokens.invalidate(token)
            if not resend:
                raise
            log.info("%s: session token refused; renewing it and trying once more", endpoint)
        token = self._token()
        return send({**payload, **self._scope(endpoint, token)})

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
            raise NotSent(failed) from None
        if token not in self._seen_tokens:
            self._seen_tokens = [*self._seen_tokens[1 - SEEN_TOKENS :], token]
        return token

    def _secrets(self) -> list[str]:
        """Every secret a reply might echo: the api key, every session token seen."""
        secrets = [self._api_key.reveal(), *self._seen_tokens]
        current = self._tokens.current
        if current:
            secrets.append(current)
        return secrets

    def _fetch_session(self) -> SessionReply:
        """``/session`` (retried like any read); the token and the reply's Date header."""
        payload = {"user": self._user, "api_key": self._api_key.reveal()}

        def once(read_timeout: float, total_s: float) -> SessionReply:
            reply, date = self._transport.send("GET", "session", payload, read_timeout,
                                               total_s, dated=True)  # fmt: skip
            return SessionReply(self._transport.parse("session", models.token_from_api, reply),
                                date)  # fmt: skip

        deadline = self._clock.monotonic() + self._read_budget_s
        return self._transport.retrying("session", once, deadline)


class _OrderDesk:
    """What :class:`multirun.api.placing.Placer` needs of the server, over the client's calls."""

    def __init__(self, client: AlgogeneClient) -> None:
        self.client = client

    def send_order(self, body: OrderBody, order_ref: str) -> OrderAck:
        reply = self.client._write_once("open_order", body)
        parse = lambda r: models.ack_from_api(r, order_ref)  # noqa: E731
        return self.client._transport.parse("open_order", parse, reply)

    def trades(self, listing: str, deadline: float | None) -> list[Trade]:
        return self.client._read(listing, {}, models.trades_from_api, deadline=deadline)

    def strategy_trades(self, order_ref: str) -> list[Transaction]:
        return self.client.strategy_trades(order_ref)

    def pause(self, seconds: float, what: str) -> None:
        self.client._transport.pause(seconds, what)


class _Desk:
    """What :func:`multirun.api.confirm.settle` needs of the server, over the client's calls."""

    def __init__(
        self,
        client: AlgogeneClient,
        endpoint: str,
        listing: str,
        history: tuple[str, str] | None = None,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.listing = listing
        self.history = history  # (trade id, orderRef): the history proves its close

    def send(self, ids: list[str]) -> tuple[ApiError | None, set[str]]:
        """POST ``tradeIDs``. Returns (None, the ids the reply names as submitted) when
        accepted, (the ambiguous or refusal error, empty) otherwise."""
        try:
            reply = self.client._write(self.endpoint, {"tradeIDs": ",".join(ids)})
            res = reply.get("res")
            named = {i for i in ids if isinstance(res, str) and f"'{i}'" in res}
            return None, named
        except NotSent as not_sent:
            error: ApiError = not_sent.error
        except (*AMBIGUOUS, OrderRejected) as failed:
            log.info("%s; checking the trades before sending again", failed)
            return failed, set()
        raise error

    def listed(self, deadline: float) -> set[str] | None:
        """The trade ids in the listing, or None when it could not be read."""
        try:
            trades = self.client._read(self.listing, {}, models.trades_from_api,
                                       deadline=deadline)  # fmt: skip
        except (ApiError, NotSent) as unread:
            failed = _told_to_wait(unread)
            log.info("%s: could not read it to confirm (%s)", self.listing, failed)
            return None
        return {t.trade_id for t in trades}

    def closed_in_history(self, deadline: float) -> set[str] | None:
        """With ``history``: the trade ids its orderRef's history shows closed (the rows
        kept for pricing when they show ours); None without one, or unread."""
        if self.history is None:
            return None
        trade_id, order_ref = self.history
        params = {"acdate": "", "runtime_id": self.client._accountid, "orderRef": order_ref}
        try:
            rows = self.client._read("strategy_trade", params, models.transactions_from_api,
                                     deadline=deadline)  # fmt: skip
        except (ApiError, NotSent) as unread:
            log.info("strategy_trade: could not read it to confirm (%s)", _told_to_wait(unread))
            return None  # the listing decides
        rows = [r for r in rows if r.order_ref == order_ref]
        closed = models.closed_trade_ids(rows)
        if trade_id in closed:
            self.client._close_history = {order_ref: rows}
        return closed

    def fill(self, trade_id: str) -> Fill:
        try:
            status = self.client.query_order(trade_id).status
        except RequestRejected:
            return ABSENT
        except (ApiError, NotSent) as unread:
            _told_to_wait(unread)
            return UNANSWERED
        return PENDING if status.upper() == "PENDING" else FILLED


def _told_to_wait(failure: ApiError | NotSent) -> ApiError:
    """The error behind ``failure``; raised when it is a 429 whose Retry-After ran past
    the read's deadline: a confirmation poll must not keep asking a server that said to
    wait (the caller, the worker, keeps to it)."""
    error = failure.error if isinstance(failure, NotSent) else failure
    if isinstance(error, RateLimitError) and error.retry_after_s is not None:
        raise error from None
    return error
