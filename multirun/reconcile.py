"""Reconciling an account's journal with the server: on start-up, and before every tick.

The server is the truth about what is open; the journal is the truth about what we
may have sent. :class:`Reconciler` brings the two in line:

- on start (:meth:`Reconciler.reconcile`) it adopts trades carrying our orderRef
  (the account's prefix followed by digits) that the journal does not hold, records
  trades closed meanwhile, and settles intents a previous process may have sent by
  asking the server with ``find_order``. An intent is never sent again: one not found
  within the reconcile window is abandoned;
- before every tick (:meth:`Reconciler.sync`) it does the same from the listings;
- after an order (:meth:`Reconciler.await_listed`) it waits, bounded, until the server
  lists the trade, since a market order is listed only once filled.

Only trades whose orderRef the journal owns (:meth:`multirun.journal.Journal.owns`)
are ever looked at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from multirun.clock import StopSignal
from multirun.journal import HELD, INTENT, Journal, JournalOrder
from multirun.models import Trade

# The worker's logger: reconciling is what the account's worker does, and its lines
# read as such.
log = logging.getLogger("multirun.worker")

# How long a previous process may have kept (re)sending one order: the client's sends
# with their read timeouts and reconciliation. Bounds the wait for an unsettled intent.
MAX_SEND_S = 120.0


class Listings(Protocol):
    """What reconciling reads of the server (see :class:`multirun.client.AlgogeneClient`)."""

    def opened_trades(self, trade_id: str | int | None = None) -> list[Trade]: ...
    def pending_trades(self) -> list[Trade]: ...
    def find_order(self, order_ref: str) -> Trade | None: ...


@dataclass(frozen=True)
class Timing:
    """The client's timing the worker must agree with (see AlgogeneClient)."""

    reconcile_window_s: float = 5.0  # an order may take this long to appear in listings
    close_confirm_s: float = 10.0
    poll_s: float = 0.05


DEFAULT_TIMING = Timing()


class Reconciler:
    """Keeps one account's journal in line with the server's listings.

    Deadlines are on wall time, as the journal's timestamps are. ``started``: when
    this process started; every intent older than it is a previous process's.
    """

    def __init__(
        self,
        client: Listings,
        journal: Journal,
        *,
        stop: StopSignal,
        timing: Timing,
        started: float,
    ) -> None:
        self.client = client
        self.journal = journal
        self.stop = stop
        self.timing = timing
        self.started = started
        self.visible: set[str] = set()  # orderRefs listed by the server at the last sync
        self.seen_opened: set[str] = set()  # orderRefs this process saw in opened_trades
        self.reconciled = False  # start-up reconciliation done: ticks may begin

    def reconcile(self) -> None:
        """Settle the journal against the server before the first tick."""
        self.close_send_windows()
        self.sync()
        while self.journal.intents() and not self.stop.is_set():
            self.settle_intents()
            if self.journal.intents():
                self.stop.wait(0.2)
        self.sync()
        self.reconciled = True

    def ours(self, *, with_pending: bool = True) -> tuple[list[Trade], list[Trade]]:
        """Our opened and our pending trades, as the server lists them now."""
        pending = (
            [t for t in self.client.pending_trades() if self.journal.owns(t.order_ref)]
            if with_pending
            else []
        )
        opened = [t for t in self.client.opened_trades() if self.journal.owns(t.order_ref)]
        self.seen_opened.update(t.order_ref for t in opened)
        return opened, pending

    def _pending_may_hold_ours(self) -> bool:
        """Whether a sync must also list pending trades.

        Not when ticking with every trade we hold already seen opened by this process
        and no order in flight: an opened trade never goes back to pending, so the
        listing would find nothing of ours (one request less per tick). Reconciling on
        start, where a lost journal's trades are adopted, always lists both.
        """
        if not self.reconciled or self.journal.intents():
            return True
        return any(row.order_ref not in self.seen_opened for row in self.journal.held())

    def sync(self) -> list[JournalOrder]:
        """Bring the journal in line with the server's listings; returns our held orders."""
        opened, pending = self.ours(with_pending=self._pending_may_hold_ours())
        listed = {t.order_ref: t for t in [*pending, *opened]}  # opened wins a tie
        self.visible = set(listed)
        for trade in listed.values():
            self._record_listed(trade)
        self.journal.mark_listed(
            row.order_ref for row in self.journal.held() if row.order_ref in listed
        )
        now = time.time()
        for row in self.journal.held():
            if row.order_ref not in listed and not self._may_be_unlisted(row, now):
                self.journal.mark_closed([row.order_ref], "no longer listed by the server")
                log.info("trade %s (%s) was closed meanwhile", row.trade_id, row.order_ref)
        for row in self.journal.intents():
            if now >= self._intent_deadline(row):
                self._abandon(row)
        return self.journal.held()

    def _record_listed(self, trade: Trade) -> None:
        row = self.journal.find(trade.order_ref)
        if row is not None and row.state in HELD and row.trade_id == trade.trade_id:
            return
        if row is not None and row.state == INTENT:
            self.journal.mark_acked(trade.order_ref, trade.trade_id)
            log.info("order %s found on the server as trade %s", trade.order_ref, trade.trade_id)
            return
        self.journal.adopt(
            trade.order_ref, trade.trade_id, trade.instrument, trade.side, trade.volume
        )
        log.warning(
            "adopted trade %s (%s %s %s, %s): ours but not journaled as open",
            trade.trade_id, trade.side, trade.volume, trade.instrument, trade.order_ref,
        )  # fmt: skip

    def _may_be_unlisted(self, row: JournalOrder, now: float) -> bool:
        """A just-acknowledged market order is listed only once filled: give it time.

        Once the server has listed a trade, missing from the listing means closed.
        """
        return row.listed_ts is None and now < self._grace_end(row)

    def close_send_windows(self) -> None:
        """Journal that intents of a previous (dead) process can no longer be sent.

        Stored, so the reconcile window of such an intent runs from the first restart
        that saw it: a worker killed again and again while waiting still settles it.
        Every intent is a previous process's here (we hold the lock and sent nothing),
        even one stamped after our start by a clock that has since been set back.
        """
        for row in self.journal.intents():
            if row.send_ended_ts is None:
                ended = min(self.started, row.created_ts + MAX_SEND_S)
                self.journal.mark_send_ended(row.order_ref, at=ended)

    def _intent_deadline(self, row: JournalOrder) -> float:
        """When an intent not found on the server can be declared never placed."""
        # No end recorded: the intent is being sent by this very process right now.
        last_send = row.send_ended_ts if row.send_ended_ts is not None else time.time()
        return last_send + self.timing.reconcile_window_s

    def settle_intents(self) -> None:
        """Ask the server for each unsettled intent by orderRef (find_order)."""
        for row in self.journal.intents():
            trade = self.client.find_order(row.order_ref)
            if trade is not None:
                self.journal.mark_acked(row.order_ref, trade.trade_id)
                log.info("order %s found on the server as trade %s", row.order_ref, trade.trade_id)
            elif time.time() >= self._intent_deadline(row):
                self._abandon(row)

    def _abandon(self, row: JournalOrder) -> None:
        note = "not on the server after the reconcile window"
        self.journal.mark_abandoned(row.order_ref, note)
        log.warning("order %s abandoned: %s", row.order_ref, note)

    def await_listed(self, refs: Sequence[str]) -> None:
        """Wait (bounded) until just-acknowledged trades show in opened_trades.

        Closing a market order that has not filled yet would be refused while the
        fill still happens later: confirm it is listed before acting on it.
        """
        rows = [self.journal.find(ref) for ref in refs if ref not in self.visible]
        waiting = {r.order_ref: r for r in rows if r is not None and r.trade_id}
        now = time.time()
        deadline = max((self._grace_end(r) for r in waiting.values()), default=now)
        while waiting and time.time() < deadline:
            listed = {t.order_ref for t in self.client.opened_trades()} & set(waiting)
            self.seen_opened |= listed
            self.visible |= listed
            self.journal.mark_listed(listed)
            waiting = {ref: r for ref, r in waiting.items() if ref not in listed}
            if waiting:
                time.sleep(self.timing.poll_s)

    def _grace_end(self, row: JournalOrder) -> float:
        return (row.acked_ts or row.created_ts) + self.timing.reconcile_window_s
