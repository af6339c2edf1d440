"""Reconciling an account's journal with the server: on start-up, and before every tick.

The server is the truth about what is open; the journal is the truth about what we
may have sent. :class:`Reconciler` brings the two in line:

- on start (:meth:`Reconciler.reconcile`) it adopts trades carrying our orderRef
  (the account's prefix followed by digits) that the journal does not hold, records
  trades closed meanwhile, and looks for intents a previous process may have sent by
  asking the server with ``find_order``;
- before every tick (:meth:`Reconciler.sync`) it does the same from the listings.

What the server says is weighed, not taken at its word:

- **A trade is closed only when the server confirms it**: absent from two listings at
  least ``MISS_GAP_S`` apart, or shown closed by the transaction history
  (``/strategy_trade``). One listing that omits it (empty, partial, a trade listed
  without its ``order_Ref``: matched by trade id) closes nothing.
- **An order whose fate is unknown is never sent again** and is UNCERTAIN: it blocks
  new opens (the intent stays in the journal) while the listings and, with backoff,
  the history are searched for it. It is resolved when found (adopted as the trade),
  or abandoned once ``late_window_s`` has passed since its last send and a history
  read made after that shows nothing under its orderRef. An unreadable history keeps
  it UNCERTAIN (reported in the log and ``status.json``) until a person settles it.
- **Two trades under one orderRef** (a server that executed an order twice): the one
  the journal holds stays; the other is an *extra*, counted as open and closed at
  once (:meth:`Reconciler.close_extras`).
- Trades listed without any orderRef are counted (:attr:`Reconciler.unattributed`):
  ``max_open_trades`` counts what the server lists, not only the journal.
- after an order (:meth:`Reconciler.await_listed`) it waits, bounded, until the server
  lists the trade, since a market order is listed only once filled.

Only trades whose orderRef the journal owns (:meth:`multirun.account.journal.store.Journal.owns`)
are ever looked at.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from multirun.account.journal.store import HELD, INTENT, Journal, JournalOrder
from multirun.api.models import Trade, Transaction, closed_trade_ids
from multirun.api.polls import LISTED_POLLS, Learned, Polls, Schedule
from multirun.core.clock import SYSTEM_CLOCK, Clock, StopSignal
from multirun.core.errors import ApiError

# The worker's logger: reconciling is what the account's worker does, and its lines
# read as such.
log = logging.getLogger("multirun.worker")

# How long a previous process may have kept (re)sending one order: the client's sends
# with their read timeouts and reconciliation. Bounds the wait for an unsettled intent.
MAX_SEND_S = 120.0
MISS_GAP_S = 1.0  # two listings without a trade, at least this far apart: closed
HISTORY_BACKOFF_S = (1.0, 30.0)  # first and longest pause between history reads per order
_NEVER = threading.Event()  # await_listed's pauses are bounded, not cut by a stop request


class Listings(Protocol):
    """What reconciling reads of the server (see :class:`multirun.api.client.AlgogeneClient`)."""

    def opened_trades(self, trade_id: str | int | None = None) -> list[Trade]: ...
    def pending_trades(self) -> list[Trade]: ...
    def find_order(self, order_ref: str) -> Trade | None: ...
    def strategy_trades(
        self, order_ref: str | None = None, acdate: str = ""
    ) -> list[Transaction]: ...
    def close_trades(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...,
        order_ref: str | None = ...,
    ) -> None: ...  # fmt: skip


@dataclass(frozen=True)
class Timing:
    """The client's timing the worker must agree with (see AlgogeneClient)."""

    reconcile_window_s: float = 5.0  # an order may take this long to appear in listings
    close_confirm_s: float = 10.0
    listed_polls: Polls = LISTED_POLLS  # opened_trades re-reads until a fill is listed
    learn: bool = True  # listed_polls learns how soon fills are listed (polls.Learned)
    late_window_s: float = 45.0  # a server may execute an order this long after its send
    miss_gap_s: float = MISS_GAP_S


DEFAULT_TIMING = Timing()


class Reconciler:
    """Keeps one account's journal in line with the server's listings.

    Deadlines are on wall time, as the journal's timestamps are. ``started``: when
    this process started; every intent older than it is a previous process's.
    ``clock``: the time and pauses of :meth:`await_listed` (a fake one in tests).
    """

    def __init__(
        self,
        client: Listings,
        journal: Journal,
        *,
        stop: StopSignal,
        timing: Timing,
        started: float,
        clock: Clock = SYSTEM_CLOCK,
        on_listed: Callable[[list[Trade]], None] = lambda trades: None,
        on_closed: Callable[[list[str]], None] = lambda refs: None,
        on_foreign: Callable[[str], None] = lambda order_ref: None,
        on_start_listing: Callable[[list[Trade]], None] = lambda trades: None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.journal = journal
        self.stop = stop
        self.timing = timing
        self.started = started
        self.visible: set[str] = set()  # orderRefs listed by the server at the last sync
        self.seen_opened: set[str] = set()  # orderRefs this process saw in opened_trades
        self.reconciled = False  # start-up reconciliation done: ticks may begin
        self.missing: dict[str, float] = {}  # held orderRef -> when first missing (wall)
        self.extras: dict[str, Trade] = {}  # trade id -> a second trade under our orderRef
        self.unattributed: list[Trade] = []  # opened trades listed without an orderRef
        self.uncertain: set[str] = set()  # intents reported UNCERTAIN
        # orderRef -> (next history read, pause after it, last read), all wall time
        self._history_due: dict[str, tuple[float, float, float]] = {}
        self.on_listed = on_listed  # told the opened trades of ours it lists
        self.on_closed = on_closed  # told the closes it finds confirmed
        # Told each trade of ours the journal never held that it adopts once ticking:
        # another process may trade this account (ownership.ForeignTrades).
        self.on_foreign = on_foreign
        self.adopted_on_start: list[str] = []  # never held, adopted while reconciling on start
        # Told, once the start-up reconciliation is over, every trade (whoever's) its last
        # listing showed, opened and pending: the ownership check's view of the start
        # (ownership.EpochWatch), so it need not list them again
        self.on_start_listing = on_start_listing
        self._listing: list[Trade] = []  # the last listing read while reconciling on start
        # await_listed's polls: how soon this account's fills were listed, per process
        self.listed_polls: Schedule = (
            Learned(timing.listed_polls) if timing.learn else timing.listed_polls
        )

    def reconcile(self) -> None:
        """Settle the journal against the server before the first tick."""
        self.close_send_windows()
        self.sync()
        # Intents get the reconcile window here; past it they stay UNCERTAIN (blocking
        # opens, watched every tick) rather than holding the first tick back.
        settled = False
        while self._young_intents() and not self.stop.is_set():
            settled = True
            self.settle_intents()
            if self._young_intents():
                self.stop.wait(0.2)
        if settled:  # else nothing changed since the sync above: listing again shows the same
            self.sync()
        self.reconciled = True
        listing, self._listing = self._listing, []
        self.on_start_listing(listing)

    def _young_intents(self) -> list[JournalOrder]:
        now = time.time()
        return [r for r in self.journal.intents() if now < self._intent_deadline(r)]

    def ours(self, *, with_pending: bool = True) -> tuple[list[Trade], list[Trade]]:
        """Our opened and our pending trades, as the server lists them now: those carrying
        our orderRef, and those listed without one whose trade id the journal holds (with
        the journal's orderRef put back). Updates :attr:`unattributed`."""
        pending = self.client.pending_trades() if with_pending else []
        opened = self.client.opened_trades()
        if not self.reconciled:
            self._listing = [*opened, *pending]
        by_id = {row.trade_id: row.order_ref for row in self.journal.held() if row.trade_id}
        by_id.update((t.trade_id, t.order_ref) for t in self.extras.values())

        def mine(trades: list[Trade]) -> list[Trade]:
            out = []
            for t in trades:
                if not t.order_ref and t.trade_id in by_id:
                    t = replace(t, order_ref=by_id[t.trade_id])
                if self.journal.owns(t.order_ref):
                    out.append(t)
            return out

        self.unattributed = [t for t in opened if not t.order_ref and t.trade_id not in by_id]
        ours_opened, ours_pending = mine(opened), mine(pending)
        self.seen_opened.update(t.order_ref for t in ours_opened)
        return ours_opened, ours_pending

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
        listed = self._split_extras([*opened, *pending])
        self.visible = set(listed)
        for trade in listed.values():
            self._record_listed(trade)
        self.journal.mark_listed(
            row.order_ref for row in self.journal.held() if row.order_ref in listed
        )
        self.on_listed([t for t in opened if listed.get(t.order_ref) is t])
        now = time.time()
        for ref in [r for r in self.missing if r in listed]:
            del self.missing[ref]
        for row in self.journal.held():
            if row.order_ref not in listed and not self._may_be_unlisted(row, now):
                self._missing(row, now)
        for row in self.journal.intents():
            self._watch_intent(row, now)
        self._report_uncertain()
        return self.journal.held()

    def _split_extras(self, trades: list[Trade]) -> dict[str, Trade]:
        """orderRef -> its trade; a second trade under one orderRef goes to :attr:`extras`
        (the journal's trade id keeps the ref; opened before pending otherwise)."""
        listed: dict[str, Trade] = {}
        seen_ids: set[str] = set()
        extras: dict[str, Trade] = {}
        for trade in trades:
            if trade.trade_id in seen_ids:
                continue  # listed as opened and as pending while it fills
            seen_ids.add(trade.trade_id)
            first = listed.get(trade.order_ref)
            if first is None:
                listed[trade.order_ref] = trade
                continue
            row = self.journal.find(trade.order_ref)
            if row is not None and row.trade_id == trade.trade_id:
                listed[trade.order_ref], trade = trade, first
            extras[trade.trade_id] = trade
        for trade_id, trade in extras.items():
            if trade_id not in self.extras:
                log.warning(
                    "orderRef %s is carried by a second trade %s (the server executed it "
                    "twice): tracked, and closed", trade.order_ref, trade_id,
                )  # fmt: skip
        self.extras = extras
        return listed

    def close_extras(self) -> None:
        """Close every second trade under one of our orderRefs (see the docstring)."""
        if not self.extras:
            return
        ids = sorted(self.extras)
        self.client.close_trades(ids, confirm_timeout_s=self.timing.close_confirm_s)
        log.info("closed the duplicate trade(s) %s", ", ".join(ids))
        self.extras = {}

    @property
    def open_on_server(self) -> int:
        """Trades open as the server listed them at the last sync that may be ours."""
        return len(self.visible) + len(self.extras) + len(self.unattributed)

    def _missing(self, row: JournalOrder, now: float) -> None:
        """A held trade absent from this listing: closed only when confirmed."""
        first = self.missing.setdefault(row.order_ref, now)
        if now - first >= self.timing.miss_gap_s:
            self._closed(row, "absent from two listings")
            return
        rows = self._history(row.order_ref)
        if rows and row.trade_id and row.trade_id in closed_trade_ids(rows):
            self._closed(row, "closed in the transaction history")

    def _closed(self, row: JournalOrder, how: str) -> None:
        self.missing.pop(row.order_ref, None)
        self.journal.mark_closed([row.order_ref], f"closed meanwhile ({how})")
        self.on_closed([row.order_ref])
        log.info("trade %s (%s) was closed meanwhile (%s)", row.trade_id, row.order_ref, how)

    def _history(self, order_ref: str) -> list[Transaction] | None:
        """The transaction history of ``order_ref``, or None when it cannot be read."""
        try:
            return self.client.strategy_trades(order_ref)
        except ApiError as failed:
            log.debug("strategy_trade %s: unreadable (%s)", order_ref, failed)
            return None

    def _watch_intent(self, row: JournalOrder, now: float) -> None:
        """An intent whose send ended without an answer: look in the history (with
        backoff); abandon it only when the server can no longer execute it and a history
        read after that shows nothing."""
        if row.send_ended_ts is None or now < self._intent_deadline(row):
            return  # being sent by this process, or still within its reconcile window
        ref = row.order_ref
        due, pause, read_at = self._history_due.get(ref, (0.0, HISTORY_BACKOFF_S[0], 0.0))
        late_at = row.send_ended_ts + self.timing.late_window_s
        late = now >= late_at
        if now < due and not (late and read_at < late_at):
            return
        self._history_due[ref] = (now + pause, min(pause * 2, HISTORY_BACKOFF_S[1]), now)
        rows = self._history(ref)
        if rows:
            self.journal.mark_acked(row.order_ref, rows[0].trade_id)
            log.info("order %s found in the transaction history as trade %s",
                     row.order_ref, rows[0].trade_id)  # fmt: skip
            if rows[0].trade_id in closed_trade_ids(rows):
                self._closed(self.journal.get(row.order_ref), "closed in the transaction history")
        elif rows is not None and late:
            late_s = self.timing.late_window_s
            note = f"never executed: not listed nor in the history {late_s:g} s after its send"
            self._abandon(row, note)

    def _report_uncertain(self) -> None:
        now = time.time()
        current = {r.order_ref for r in self.journal.intents()
                   if r.send_ended_ts is not None and now >= self._intent_deadline(r)}  # fmt: skip
        for ref in sorted(current - self.uncertain):
            log.error("order %s is UNCERTAIN: sent without an answer and not found on the "
                      "server; never resent; no new orders on this account until it is "
                      "found or the history shows it never executed", ref)  # fmt: skip
        for ref in sorted(self.uncertain - current):
            row = self.journal.find(ref)
            log.info("order %s is no longer uncertain (%s)", ref,
                     row.state if row is not None else "gone")  # fmt: skip
            self._history_due.pop(ref, None)
        self.uncertain = current

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
        if row is None:  # the journal never held it
            self._adopted(trade.order_ref)
        log.warning(
            "adopted trade %s (%s %s %s, %s): ours but not journaled as open",
            trade.trade_id, trade.side, trade.volume, trade.instrument, trade.order_ref,
        )  # fmt: skip

    def _adopted(self, order_ref: str) -> None:
        if not self.reconciled:
            self.adopted_on_start.append(order_ref)  # a lost journal's trades: expected
        else:
            self.on_foreign(order_ref)

    def _may_be_unlisted(self, row: JournalOrder, now: float) -> bool:
        """A just-acknowledged market order is listed only once filled: give it time."""
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
        """Ask the server for each unsettled intent by orderRef (find_order), and the
        history for those past their reconcile window (see :meth:`sync`)."""
        for row in self.journal.intents():
            trade = self.client.find_order(row.order_ref)
            if trade is not None:
                self.journal.mark_acked(row.order_ref, trade.trade_id)
                log.info("order %s found on the server as trade %s", row.order_ref, trade.trade_id)
            else:
                self._watch_intent(row, time.time())
        self._report_uncertain()

    def _abandon(self, row: JournalOrder, note: str) -> None:
        self.journal.mark_abandoned(row.order_ref, note)
        log.warning("order %s abandoned: %s", row.order_ref, note)

    def await_listed(self, refs: Sequence[str]) -> None:
        """Wait (bounded) until just-acknowledged trades show in opened_trades.

        Closing a market order that has not filled yet would be refused while the
        fill still happens later: confirm it is listed before acting on it. The first
        read comes when fills were listed after recent acks (:attr:`listed_polls`;
        at once until a couple were seen), then re-reads soon and backs off.
        """
        rows = [self.journal.find(ref) for ref in refs if ref not in self.visible]
        waiting = {r.order_ref: r for r in rows if r is not None and r.trade_id}
        now = self.clock.time()
        deadline = max((self._grace_end(r) for r in waiting.values()), default=now)
        if not waiting or now >= deadline:
            return
        plan = self.listed_polls.schedule()
        # When the server took the (latest) order on: the learned delay runs from there.
        sent = max(r.acked_ts or r.created_ts for r in waiting.values())
        pause, pauses = sent + plan.delay_s - now, plan.pauses()
        missed: float | None = None  # when the last read that found nothing began
        while waiting:
            if pause > 0:
                self.clock.wait(_NEVER, min(pause, deadline - now))
                now = self.clock.time()
            if now >= deadline and missed is not None:
                return
            read_at = now
            opened = [t for t in self.client.opened_trades() if t.order_ref in waiting]
            listed = {t.order_ref for t in opened}
            if listed:  # a poll that finds nothing writes nothing (no empty transaction)
                self.seen_opened |= listed
                self.visible |= listed
                self.journal.mark_listed(listed)
                self.on_listed(opened)
            waiting = {ref: r for ref, r in waiting.items() if ref not in listed}
            if not waiting:
                self.listed_polls.record(read_at - sent, missed)
            missed, now = read_at - sent, self.clock.time()
            if now >= deadline:
                return
            pause = next(pauses)

    def _grace_end(self, row: JournalOrder) -> float:
        return (row.acked_ts or row.created_ts) + self.timing.reconcile_window_s
