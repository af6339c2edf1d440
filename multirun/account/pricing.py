"""The money side of an account worker: fill and close prices, realized P&L, equity series.

Which figure is which (see also docs/operating.md, "Prices and P&L"):

- **Fill price and time** (``orders.fill_price``, ``filled_ts``): the open price of the
  trade in ``/opened_trades`` when it is first listed (``price_source = 'listing'``),
  and the server's own fill time where it is within a minute of our own times (else the
  time we first saw it listed).
- **Close price and realized P&L** (``close_price``, ``realized_pl``), recorded when the
  close is confirmed: from the trade's close row in ``/strategy_trade`` (``'history'``,
  the server's own figures: exact), else a fallback (``'quote'``): the close price is a
  fresh quote's (else the last quote seen) bid for a buy, ask for a sell, and the P&L the
  trade's unrealized P&L in its last listing; off by the market move between that
  listing and the fill of the close (about one tick interval), and by the spread. A
  fallback close is priced from the history again on the following ticks (a few tries).
- **Equity** (``equity`` table): ``/balance`` NAV, realized and unrealized P&L, the
  server's own figures, sampled at most once per tick and at most once every
  :data:`EQUITY_EVERY_S` seconds, plus once at the stop.

Nothing here may fail a tick or a close: a failing request leaves the figure unknown
(NULL) and is logged at debug level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from multirun.account.journal.store import HELD, Journal, JournalOrder
from multirun.api.models import Balance, Quote, Trade, Transaction, parse_api_time
from multirun.core.errors import ApiError, Interrupted, JournalError, MultirunError
from multirun.core.statefiles import HeldPosition, WorkerStatus

log = logging.getLogger("multirun.worker")

# The least time between two equity samples: one /balance request in 12 ticks at 5 s,
# in 60 at 1 s (every 15 s, it was one request a tick in 20 at 5 s; issue 27). The
# money limits move the last sample by our own P&L meanwhile (multirun.account.risk).
EQUITY_EVERY_S = 60.0
HISTORY_TRIES = 3  # history reads of a close priced by the fallback, one per tick
SKEW_S = 60.0  # a server time further than this from our own is not used as the fill time


class Pricing:
    """Prices one account's trades into its journal; the worker tells it what it sees."""

    def __init__(
        self,
        client: Any,
        journal: Journal,
        *,
        on_realized: Callable[[float], None] = lambda delta: None,
    ) -> None:
        self.client = client
        self.journal = journal
        # Told how much each close priced (or priced again) moved the realized P&L: the
        # money limits' running sum (multirun.account.risk), with no journal read per tick
        self.on_realized = on_realized
        self.quotes: dict[str, Quote] = {}  # the last quote seen per symbol
        self.unrealized: dict[str, float] = {}  # per orderRef: P&L in its last listing
        self.balance: Balance | None = None  # the last /balance read
        self.sampled_at: float | None = None  # wall time of the last equity sample
        self.pending: dict[str, int] = {}  # closes to price (from the history): tries left

    # --- what the worker sees --------------------------------------------------------

    def quote_seen(self, quote: Quote) -> Quote:
        self.quotes[quote.symbol] = quote
        return quote

    def listed(self, trades: Iterable[Trade]) -> None:
        """Trades of ours the server lists: record first fills, keep unrealized P&L."""
        for trade in trades:
            row = self.journal.find(trade.order_ref)
            if row is None or row.trade_id not in (None, trade.trade_id):
                continue  # not ours, or a second trade under our orderRef
            self.unrealized[trade.order_ref] = trade.unrealized_pl
            if row.fill_price is not None or row.state not in HELD:
                continue
            now = time.time()
            at = _api_time(trade.timestamp)
            if at is None or not row.created_ts - SKEW_S <= at <= now + SKEW_S:
                at = row.listed_ts or now
            self.journal.record_fill(trade.order_ref, trade.price, at, "listing")

    def closed(self, order_refs: Iterable[str]) -> None:
        """Closes just confirmed (told by whoever confirmed them: the worker, the
        reconciler, on_stop's closer): priced by :meth:`price`."""
        for ref in order_refs:
            self.pending[ref] = HISTORY_TRIES

    # --- requests (never failing) ----------------------------------------------------

    def price(self) -> None:
        """Price the confirmed closes: from the history, else the fallback (once), and
        log each as ``closed BUY 0.01 BTCUSD @ 97110.0, P&L +0.98 (trade 7, ref)``."""
        for ref, tries in list(self.pending.items()):
            row = self.journal.find(ref)
            if row is None:
                del self.pending[ref]
                continue
            close = self._history_close(ref, row.trade_id)
            price: float | None
            pl: float | None
            first = row.price_source in (None, "listing")
            if close is not None:
                price, pl, source = close.price, close.realized_pl, "history"
            elif first:
                price, pl, source = self._fallback(row.instrument, row.side, ref)
            else:
                price = pl = None
                source = ""
            if source:
                self.journal.record_close(ref, price, pl, source)
                self.on_realized((pl or 0.0) - (row.realized_pl or 0.0))
            if first:
                log.info(
                    "closed %s %s %s @ %s, P&L %s (trade %s, %s; %s)",
                    row.side, row.volume, row.instrument, _num(price), _signed(pl),
                    row.trade_id, ref, source,
                )  # fmt: skip
            elif source:
                log.info("trade %s (%s) priced from the history: @ %s, P&L %s",
                         row.trade_id, ref, _num(price), _signed(pl))  # fmt: skip
            if source == "history" or tries <= 1:
                del self.pending[ref]
                self.unrealized.pop(ref, None)
            else:
                self.pending[ref] = tries - 1

    def record(self, *, final: bool = False) -> None:
        """After each tick (and at the stop, ``final``): :meth:`price`, :meth:`sample`;
        never fails (a failing journal is logged, the tick fails on it anyway)."""
        try:
            self.price()
            self.sample(force=final)
        except MultirunError as exc:
            log.warning("cannot record prices: %s", exc)

    def sample(self, *, force: bool = False) -> None:
        """Append a ``/balance`` point to the equity series, at the bounded rate."""
        now = time.time()
        if not force and self.sampled_at is not None and now - self.sampled_at < EQUITY_EVERY_S:
            return
        self.sampled_at = now
        balance = _quietly(lambda: self.client.balance(), "balance")
        if isinstance(balance, Balance):
            self.balance = balance
            self.journal.add_equity(now, balance.nav, balance.realized_pl, balance.unrealized_pl)

    def _history_close(self, ref: str, trade_id: str | None) -> Transaction | None:
        rows = _quietly(lambda: self.client.strategy_trades(order_ref=ref), "strategy_trade")
        if not isinstance(rows, list):
            return None
        mine = [r for r in rows if trade_id is None or r.trade_id == trade_id]
        closes = [r for r in mine if r.closes] or mine[1:]  # else: the second row is the close
        return closes[-1] if closes else None

    def _fallback(self, symbol: str, side: str, ref: str) -> tuple[float | None, float | None, str]:
        fresh = _quietly(lambda: self.client.realtime_price(symbol), "realtime_price")
        if isinstance(fresh, dict) and isinstance(fresh.get(symbol), Quote):
            self.quote_seen(fresh[symbol])
        quote = self.quotes.get(symbol)
        price = None if quote is None else quote.bid if side == "BUY" else quote.ask
        return price, self.unrealized.get(ref), "quote"

    # --- for status.json ---------------------------------------------------------------

    def status(self) -> WorkerStatus:
        """``positions`` (held trades: side, volume, entry price, unrealized P&L), ``nav``,
        ``unrealized_pl``, ``realized_pl_today`` (our closes since 00:00 UTC)."""
        held = self.journal.held()
        positions = [
            HeldPosition(
                order_ref=row.order_ref,
                instrument=row.instrument,
                side=row.side,
                volume=row.volume,
                entry_price=row.fill_price,
                unrealized_pl=self.unrealized.get(row.order_ref),
            )
            for row in held
        ]
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        balance = self.balance
        return WorkerStatus(
            positions=positions,
            nav=None if balance is None else balance.nav,
            # the positions' (as the day's P&L counts it), not the last /balance sample's:
            # up to EQUITY_EVERY_S old, it showed a trade's loss a minute after its close
            unrealized_pl=round(self.unrealized_of(held), 2),
            realized_pl_today=round(self.journal.realized_since(midnight.timestamp()), 2),
        )

    def unrealized_of(self, held: Iterable[JournalOrder]) -> float:
        """The unrealized P&L of ``held``, from the listing read at the tick's start (0 for
        a trade not listed yet): what the day's P&L and status count."""
        return sum(self.unrealized.get(row.order_ref, 0.0) for row in held)


def _quietly(call: Any, what: str) -> object:
    """``call()``, or None when the server cannot answer (or the stop interrupts it)."""
    try:
        return call()
    except (ApiError, Interrupted, JournalError, AttributeError) as exc:
        log.debug("%s: no answer for pricing (%s)", what, exc)
        return None


def _api_time(text: str) -> float | None:
    try:
        return parse_api_time(text, "timestamp").replace(tzinfo=UTC).timestamp()
    except Exception:
        return None


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _signed(value: float | None) -> str:
    return "?" if value is None else f"{value:+.2f}"
