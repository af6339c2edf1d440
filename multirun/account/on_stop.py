"""Applying ``on_stop: close``: close every trade of ours, retrying until the stop deadline.

Used by the worker once stopped, and by a sweep (:func:`multirun.account.process.run_sweep`),
which loads no strategy code. :class:`Closer` repeats rounds of: settle unsettled
intents, sync the journal with the server, cancel our pending orders, close our opened
trades by trade id (confirmed through the listings), until nothing of ours is open or
pending and the journal holds nothing, or the deadline passes. Every retryable failure
(network, 5xx, throttling, a refused token, a held reply, an unconfirmed close) is retried
with a short backoff; what is left is then named, trade by trade.

The journal is written on the way, but a journal that cannot record a close does not stop
it: closing by trade id opens nothing. What could not be journaled is named too.

:class:`StopWindow` is the client's interrupt: while ticking it is the stop flag (a stop
request ends the client's retry sleeps at once); once on_stop begins, only the stop
deadline ends them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from multirun.account import alarm
from multirun.account.journal.store import Journal, JournalOrder
from multirun.account.reconcile import Listings, Reconciler
from multirun.api.models import Trade
from multirun.api.transport import is_retryable
from multirun.core.clock import StopSignal
from multirun.core.errors import (
    ApiError,
    CloseUnconfirmed,
    Interrupted,
    JournalError,
    one_line,
)

log = logging.getLogger("multirun.worker")

CHILD_ERROR = "multirun: error: "  # the prefix of the last line a stopping account prints
STOP_MARGIN = 0.8  # on_stop must be done by this share of stop_timeout after the stop request
HARD_MARGIN = 0.92  # past this share, a request still in flight is interrupted (SIGALRM)
BACKOFF_S = (0.1, 1.0)  # the first and the longest pause between rounds


CLIENT_LOG = "multirun.api.client"  # the client says there each close it retries, and why


class RequestFailures(logging.Handler):
    """The client's own word on the close and cancel requests that failed while a
    :class:`Closer` runs: it retries them within one call, so no exception tells the
    closer. The last one is the cause a stop's deadline cut short (issue 23, case 8: a
    5xx is said, not only ``Interrupted: stop requested``)."""

    ENDPOINTS = ("close_orders:", "cancel_orders:")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(self.ENDPOINTS):
            self.last = text.rsplit("; ", 1)[0]  # without what the client does next


def retryable(exc: BaseException) -> bool:
    """Whether closing again may succeed: the transport's rule, plus an unconfirmed close."""
    return isinstance(exc, CloseUnconfirmed) or is_retryable(exc)


class StopWindow:
    """A :class:`~multirun.core.clock.StopSignal` for the client (see the module docstring)."""

    def __init__(self, stop: StopSignal) -> None:
        self.stop = stop
        self.deadline: float | None = None  # monotonic; set once on_stop begins

    def is_set(self) -> bool:
        if self.deadline is None:
            return self.stop.is_set()
        return time.monotonic() >= self.deadline

    def wait(self, timeout: float | None = None) -> bool:
        if self.deadline is None:
            return self.stop.wait(timeout)
        remaining = max(0.0, self.deadline - time.monotonic())
        time.sleep(remaining if timeout is None else min(max(0.0, timeout), remaining))
        return self.is_set()


class Closing(Listings, Protocol):
    """What closing uses of the client (see :class:`multirun.api.client.AlgogeneClient`)."""

    def close_trades(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...,
        order_ref: str | None = ...,
    ) -> None: ...  # fmt: skip
    def cancel_orders(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...
    ) -> None: ...


@dataclass
class Outcome:
    """What on_stop close left: trades (one description each), and what went unjournaled."""

    left: list[str] = field(default_factory=list)
    unjournaled: list[str] = field(default_factory=list)
    last_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.left

    def error_line(self, account: str) -> str:
        """The one-line error a stopping account ends with (its last stderr line)."""
        return (
            f"{CHILD_ERROR}{account}: {len(self.left)} trade(s) left open: "
            + "; ".join(self.left)
            + (f" (last error: {self.last_error})" if self.last_error else "")
        )

    def unjournaled_line(self, account: str) -> str | None:
        if not self.unjournaled:
            return None
        return f"{account}: not recorded in the journal: " + "; ".join(self.unjournaled)


class Closer:
    """Closes and cancels every trade of one account (see the module docstring)."""

    def __init__(
        self,
        client: Closing,
        journal: Journal,
        reconciler: Reconciler,
        window: StopWindow,
        *,
        confirm_s: float = 10.0,
        heartbeat: Callable[[], None] = alarm.no_heartbeat,
        on_closed: Callable[[list[str]], None] = lambda refs: None,
        purpose: str = "on_stop close",
    ) -> None:
        self.client = client
        self.purpose = purpose  # what its log lines say it does: a stop's close, a flatten
        self.on_closed = on_closed  # told each close it confirmed (the worker's pricing)
        self.journal = journal
        self.reconciler = reconciler
        self.window = window
        self.confirm_s = confirm_s
        self.heartbeat = heartbeat
        self.outcome = Outcome()
        self.listed: dict[str, Trade] = {}  # ours, as last listed by the server
        self.requests = RequestFailures()  # the close requests that failed, as the client says

    def run(self, deadline: float, hard_deadline: float | None = None) -> Outcome:
        """Close until done or ``deadline`` (monotonic); a request still in flight at
        ``hard_deadline`` is interrupted. Returns what is left."""
        self.window.deadline = deadline
        hard = max(deadline, hard_deadline or deadline) - time.monotonic()
        client_log = logging.getLogger(CLIENT_LOG)
        client_log.addHandler(self.requests)
        try:
            with alarm.deadline(max(0.01, hard), self.purpose):
                self._until(deadline)
        except (alarm.DeadlinePassed, Interrupted) as exc:
            self._failed(exc)
            self.outcome.left = self._left()  # cut short mid-round: what may be open still
        finally:
            client_log.removeHandler(self.requests)
        if not self.outcome.left:
            log.info("%s: no trade of ours left open", self.purpose)
        return self.outcome

    def _until(self, deadline: float) -> None:
        pause = BACKOFF_S[0]
        while True:
            self.heartbeat()
            try:
                if self._round():
                    self.outcome.left = []
                    return
            except Interrupted as exc:
                self._failed(exc)
                break
            except (ApiError, JournalError, OSError) as exc:
                self._failed(exc)
                if not retryable(exc) and not isinstance(exc, JournalError | OSError):
                    break
                left = deadline - time.monotonic()
                log.warning("%s: %s; trying again (%.1f s left)", self.purpose, one_line(exc), left)
            if time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, BACKOFF_S[1])
        self.outcome.left = self._left()

    def _round(self) -> bool:
        """One pass; True when nothing of ours is left open, pending or unsettled."""
        if self._journal_ok(self.journal.intents):
            self._journaled(self.reconciler.settle_intents, "settling intents")
        self._journaled(self.reconciler.sync, "syncing the journal")
        opened, pending = self.reconciler.ours()
        self.listed = {t.order_ref: t for t in [*pending, *opened]}
        if pending:
            self.client.cancel_orders([t.trade_id for t in pending], confirm_timeout_s=self._wait())
            log.info("cancelled %s", _names(pending))
        if opened:
            self._close(opened)
        if opened or pending:  # list again: what we cancelled and closed must be gone
            opened, pending = self.reconciler.ours()
            self.listed = {t.order_ref: t for t in [*pending, *opened]}
            if opened or pending:
                return False
        # Nothing of ours listed. A journal still holding rows is synced once more (a
        # close it has not seen yet, confirmed by a later listing or the history); an
        # empty one is done: listing again at once would show the same (at 500 accounts
        # stopping together, 3 requests each saved from the server's queue).
        held = self._journal_ok(lambda: [*self.journal.held(), *self.journal.intents()])
        if not held:
            return True
        self._journaled(self.reconciler.sync, "syncing the journal")
        return not self._journal_ok(lambda: [*self.journal.held(), *self.journal.intents()])

    def _close(self, opened: list[Trade]) -> None:
        refs = [t.order_ref for t in opened]
        what = ", ".join(f"close request of {t.trade_id} ({t.order_ref})" for t in opened)
        self._journaled(lambda: self.journal.mark_close_requested(refs), what)
        self.client.close_trades([t.trade_id for t in opened], confirm_timeout_s=self._wait())
        what = ", ".join(f"close of {t.trade_id} ({t.order_ref})" for t in opened)
        self._journaled(lambda: self._mark_closed(refs), what)
        log.info("closed %s", _names(opened))

    def _mark_closed(self, refs: list[str]) -> None:
        self.journal.mark_closed(refs)
        self.on_closed(refs)  # only once journaled, as a close confirmed

    def _wait(self) -> float:
        left = (self.window.deadline or time.monotonic()) - time.monotonic()
        return max(0.5, min(self.confirm_s, left))

    def _journaled(self, step: Callable[[], object], what: str) -> None:
        """Run a journal-writing ``step``; a journal that fails is noted, not fatal."""
        try:
            step()
        except JournalError as exc:
            self._note(what, exc)

    def _journal_ok(self, read: Callable[[], list[JournalOrder]]) -> list[JournalOrder]:
        """A journal read; a journal that fails reads as empty (the server still counts)."""
        try:
            return read()
        except JournalError as exc:
            self._note("reading", exc)
            return []

    def _note(self, what: str, exc: JournalError) -> None:
        note = f"{what}: {exc}"
        if note not in self.outcome.unjournaled:
            self.outcome.unjournaled.append(note)
            log.error("%s: could not journal the %s; closing anyway", self.purpose, note)

    def _failed(self, exc: BaseException) -> None:
        line = one_line(exc)
        if isinstance(exc, Interrupted | alarm.DeadlinePassed):
            cause = self.outcome.last_error or self.requests.last
            if cause:  # the stop's end is not the cause: what it cut short is
                line = f"{cause}; then {line}"
        self.outcome.last_error = line

    def _left(self) -> list[str]:
        """Every trade of ours that may still be open: the journal's, and the server's."""
        left: list[str] = []
        seen: set[str] = set()
        for row in self._journal_ok(self.journal.held):
            left.append(describe(row.trade_id, row.side, row.volume, row.instrument, row.order_ref))
            seen.add(row.order_ref)
        for row in self._journal_ok(self.journal.intents):
            left.append(
                f"order {row.order_ref} ({row.side} {row.volume:g} {row.instrument}, "
                "may have reached the server)"
            )
            seen.add(row.order_ref)
        for ref, t in self.listed.items():
            if ref not in seen:
                left.append(describe(t.trade_id, t.side, t.volume, t.instrument, ref))
        return left


def describe(trade_id: str | None, side: str, volume: float, instrument: str, ref: str) -> str:
    """``trade 123 BUY 1 BTCUSD (mr-acct-4)``: how a trade left open is named."""
    return f"trade {trade_id or '?'} {side} {volume:g} {instrument} ({ref})"


def _names(trades: Sequence[Trade]) -> str:
    return ", ".join(f"{t.side} {t.trade_id} ({t.order_ref})" for t in trades)
