"""Placing an order at most once: open_order's send, and its search by orderRef.

When a send's outcome is unknown (a lost reply, a 5xx, a malformed reply, a refusal
after a resend), :class:`Placer` looks for its orderRef among pending and opened trades
and in the transaction history for the client's reconcile window: found means done, not
found raises :class:`~multirun.core.errors.OrderUncertain` and the order is never sent again.
A token refusal is followed by that search and, only when absent, one resend. A first
send that made no connection (:class:`~multirun.api.transport.NotConnected`) sent nothing:
it is raised as not placed. See :mod:`multirun.api.client` for the guarantees as a whole.
"""

from __future__ import annotations

import logging
from typing import Protocol

from multirun.api.models import OrderAck, Trade, Transaction
from multirun.api.params import OrderBody
from multirun.api.transport import NotConnected
from multirun.core.clock import Clock
from multirun.core.errors import (
    ApiError,
    AuthError,
    Interrupted,
    NetworkError,
    OrderUncertain,
    ProtocolError,
    ServerError,
)

log = logging.getLogger("multirun.client")

# Failures after which a write may or may not have been executed.
AMBIGUOUS = (NetworkError, ServerError, ProtocolError)


class NotSent(Exception):
    """Internal: a call failed before its request left (no session token could be had)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


class OrderDesk(Protocol):
    """What placing an order needs of the client (:class:`multirun.api.client.AlgogeneClient`
    provides it). Each call raises :class:`NotSent` when no session token could be had."""

    def send_order(self, body: OrderBody, order_ref: str) -> OrderAck:
        """POST ``open_order`` once; a refused token is renewed and the AuthError raised."""

    def trades(self, listing: str, deadline: float | None) -> list[Trade]:
        """``pending_trades`` or ``opened_trades``, reads retried until ``deadline``."""

    def strategy_trades(self, order_ref: str) -> list[Transaction]:
        """The transaction history of ``order_ref``."""

    def pause(self, seconds: float, what: str) -> None:
        """Wait between lookups; raises Interrupted on a stop request."""


class Placer:
    """One ``open_order`` through ``desk``: its send, and the search by orderRef for
    ``reconcile_window_s`` (plus ``read_budget_s`` for a lookup that could decide)."""

    def __init__(
        self, desk: OrderDesk, *, clock: Clock, reconcile_window_s: float, read_budget_s: float
    ) -> None:
        self.desk = desk
        self.clock = clock
        self.reconcile_window_s = reconcile_window_s
        self.read_budget_s = read_budget_s

    def place(self, body: OrderBody, order_ref: str) -> OrderAck:
        """Send ``body`` (carrying ``order_ref``) as :meth:`AlgogeneClient.open_order`
        documents: at most once, unless a token refusal and a search prove it absent."""
        outcome = self._try_open(body, order_ref)
        if isinstance(outcome, OrderAck):
            return outcome
        log.warning("open_order %s: %s; looking for it by orderRef (never resent)",
                    order_ref, outcome)  # fmt: skip
        try:
            found = self._reconcile(order_ref, outcome)
        except Interrupted:
            raise OrderUncertain(
                f"open_order {order_ref}: outcome unknown ({outcome}); a stop request "
                "ended the search by orderRef; never resent",
                endpoint="open_order",
                status=outcome.status,
            ) from None
        if found is not None:
            return found
        raise OrderUncertain(
            f"open_order {order_ref}: outcome unknown ({outcome}); not found by orderRef "
            f"within {self.reconcile_window_s:g} s; the server may still execute it, so it "
            "is never resent",
            endpoint="open_order",
            status=outcome.status,
        )

    def _try_open(self, body: OrderBody, order_ref: str) -> OrderAck | ApiError:
        """One send, and after a token refusal a lookup by orderRef and, if absent, one
        resend. Returns the ack, or the ambiguous error; raises definitive errors."""
        try:
            return self.desk.send_order(body, order_ref)
        except NotSent as not_sent:
            raise not_sent.error from None
        except NotConnected:
            raise  # no connection was made: not placed (a later order has its own orderRef)
        except AMBIGUOUS as ambiguous:
            return ambiguous
        except AuthError as refused:
            if refused.status == 403 or refused.endpoint == "session":
                raise  # forbidden, or our credentials refused: nothing was sent
            first: ApiError = refused
        log.info("open_order %s: session token refused (%s); renewed; looking for it by "
                 "orderRef before sending it again", order_ref, first)  # fmt: skip
        # The whole reconcile window: a market order executed before the refusal is
        # listed (and in the history) only once filled.
        try:
            found = self._reconcile(order_ref, first)
        except (OrderUncertain, Interrupted):
            return first  # cannot tell: ambiguous
        if found is not None:
            return found
        try:
            return self.desk.send_order(body, order_ref)
        except NotSent as not_sent:
            raise not_sent.error from None
        except (*AMBIGUOUS, AuthError) as again:
            return again

    def _reconcile(self, order_ref: str, cause: ApiError) -> OrderAck | None:
        """Look for ``order_ref`` until found, or until a lookup that began after the
        window ended finds nothing (None). Raises OrderUncertain when no lookup that
        could decide succeeds within the window plus ``read_budget_s``."""
        start = self.clock.monotonic()
        window_end = start + self.reconcile_window_s
        give_up = window_end + self.read_budget_s
        interval = 0.2
        while True:
            began = self.clock.monotonic()
            try:
                found = self._locate(order_ref, give_up)
            except (ApiError, NotSent) as exc:
                error = exc.error if isinstance(exc, NotSent) else exc
                if self.clock.monotonic() >= give_up:
                    raise self._uncertain(order_ref, cause, error) from None
            else:
                if found is not None:
                    return found
                if began >= window_end:
                    return None
            now = self.clock.monotonic()  # the next lookup must begin after the window
            self.desk.pause(
                max(0.0, min(interval, window_end - now)) if now < window_end else interval,
                f"open_order {order_ref}",
            )
            interval = min(interval * 1.5, 2.0)

    def _uncertain(self, order_ref: str, cause: ApiError, error: ApiError) -> OrderUncertain:
        return OrderUncertain(
            f"open_order {order_ref}: outcome unknown ({cause}); looking for it by orderRef "
            f"failed too ({error}); never resent",
            endpoint="open_order",
            status=cause.status,
        )

    def _locate(self, order_ref: str, deadline: float) -> OrderAck | None:
        """Where ``order_ref`` is on the server: pending or opened (raises when those
        listings cannot be read), else in the transaction history (opened and closed
        again meanwhile; an unreadable history counts as not found)."""
        listed = self._listed(order_ref, deadline)
        if listed is not None:
            return listed
        try:
            rows = self.desk.strategy_trades(order_ref)
        except (ApiError, NotSent) as failed:
            log.debug("strategy_trade %s: unreadable (%s)", order_ref, failed)
            return None
        if not rows:
            return None
        # A market order filled between the listings and the history read is in the
        # history and open: only one missing from the listings read after it is closed.
        listed = self._listed(order_ref, deadline)
        if listed is not None:
            return listed
        log.info("open_order %s: found in the transaction history as trade %s",
                 order_ref, rows[0].trade_id)  # fmt: skip
        return OrderAck(rows[0].trade_id, "CLOSED", rows[0].timestamp, order_ref)

    def _listed(self, order_ref: str, deadline: float) -> OrderAck | None:
        """``order_ref``'s ack if it is pending or opened on the server now."""
        found = self.find_all(order_ref, deadline)
        if not found:
            return None
        trade, where = found[0]
        status = "FILLED" if where == "opened_trades" else "PENDING"
        log.info("open_order %s: found on the server as trade %s (%s)",
                 order_ref, trade.trade_id, where)  # fmt: skip
        return OrderAck(trade.trade_id, status, trade.timestamp, order_ref)

    def find_all(self, order_ref: str, deadline: float | None) -> list[tuple[Trade, str]]:
        """Every (trade, listing) carrying ``order_ref``: opened ones first. Pending is
        read before opened, so an order moving from one to the other is not missed."""
        pending = self.desk.trades("pending_trades", deadline)
        opened = self.desk.trades("opened_trades", deadline)
        found = [(t, "opened_trades") for t in opened if t.order_ref == order_ref]
        found += [(t, "pending_trades") for t in pending if t.order_ref == order_ref]
        if len(found) > 1:
            log.warning(
                "orderRef %s is carried by %d trades: %s; using %s",
                order_ref, len(found), ", ".join(t.trade_id for t, _ in found),
                found[0][0].trade_id,
            )  # fmt: skip
        return found
