"""Closing and cancelling confirmed: the state machine that drives trades out of a listing.

``close_orders`` and ``cancel_orders`` are idempotent, so unlike ``open_order`` they
may be sent again freely; what needs care is deciding when they are *done*. A trade
is done when the listing it must leave (``opened_trades`` for a close,
``pending_trades`` for a cancel) no longer shows it, or (a close) when the trade's
history shows its close row (:meth:`Desk.closed_in_history`: the server's own word, read
first when the caller asked for it; for :data:`HISTORY_ALONE_S` after the send a history
without the close is a poll like a listing that still shows the trade, later the listing
is read too), with one catch for a close: a
market order acknowledged but not filled yet is not listed as open either, and
closing it does nothing. So a close counts a trade missing from the listing as
closed only if it had filled before that listing was read (seen listed earlier, or
``query_order`` said so); an unfilled one is waited for and closed once it fills.

Per trade, :func:`settle` remembers what was known when the request was last sent
for it (:data:`SEEN`: listed; :data:`UNFILLED`: not filled yet; :data:`UNKNOWN`),
and sends again for trades still listed: a second after an accepted request, a fifth
of a second after an ambiguous failure, at once after a refusal that came before the
trade filled. A refusal of a trade that was listed when it was sent is final.

The machine talks to the server only through a :class:`Desk` and reads time only
through a :class:`~multirun.core.clock.Clock`, so it is tested with fakes of both.
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

from multirun.api import polls as schedules
from multirun.api.polls import Schedule
from multirun.core.clock import Clock, StopSignal
from multirun.core.errors import (
    ApiError,
    CloseUnconfirmed,
    Interrupted,
    NetworkError,
    OrderRejected,
)

SETTLE_MAX_SENDS = 10  # close/cancel requests per call, at most
SETTLE_RESEND_S = 1.0  # a trade still listed this long after its accepted request: again
SETTLE_RETRY_S = 0.2  # the same after a failed (ambiguous) request
# A history read that shows no close yet, this soon after the send, means "not yet": the
# listing is not read as well (a request more). Below SETTLE_RESEND_S, so a resend is
# decided by the listing.
HISTORY_ALONE_S = 0.5

# What we knew of a trade when we last sent the request for it.
Known = Literal["seen", "unfilled", "unknown"]
SEEN: Known = "seen"  # listed: open (or pending, for a cancel)
UNFILLED: Known = "unfilled"  # query_order says PENDING: a market order not filled yet
UNKNOWN: Known = "unknown"

# What query_order says of a trade missing from opened_trades.
Fill = Literal["absent", "pending", "filled", "unanswered"]
ABSENT: Fill = "absent"  # the server knows no such trade
PENDING: Fill = "pending"
FILLED: Fill = "filled"
UNANSWERED: Fill = "unanswered"  # the query failed

# The stop signal of the machine's pauses: never set (a pause always runs its course).
_NEVER = threading.Event()


class Desk(Protocol):
    """The server, as the machine sees it."""

    @property
    def endpoint(self) -> str:
        """``close_orders`` or ``cancel_orders``."""
        ...

    @property
    def listing(self) -> str:
        """The listing the trades must leave: ``opened_trades`` or ``pending_trades``."""
        ...

    def send(self, ids: list[str]) -> tuple[ApiError | None, set[str]]:
        """Send the request for ``ids`` once. Returns (None, the ids the reply names as
        submitted) when accepted, (the ambiguous failure or refusal, empty) otherwise;
        raises an error that ends the call (AuthError, RateLimitError...)."""
        ...

    def listed(self, deadline: float) -> set[str] | None:
        """The trade ids in the listing, or None when it could not be read by
        ``deadline`` (monotonic)."""
        ...

    def fill(self, trade_id: str) -> Fill:
        """Whether ``trade_id`` ever filled (asked only for a close)."""
        ...

    def closed_in_history(self, deadline: float) -> set[str] | None:
        """The trade ids the server's history shows closed (their close rows): done,
        whatever was known of their fill; None when the caller gave no history to read
        (or it could not be read): the listing decides."""
        ...


def settle(
    desk: Desk,
    ids: list[str],
    timeout_s: float,
    *,
    clock: Clock,
    hold_s: float,
    interrupt: StopSignal | None = None,
    polls: Schedule | None = None,
) -> None:
    """Send ``desk.endpoint`` for ``ids`` and poll ``desk.listing`` until none is left in
    it, resending for trades still listed.

    Polls follow ``polls`` (default :data:`multirun.api.polls.SETTLE_POLLS`, read at each
    call): the first listing is read at once after the first send, or, with a schedule
    that has learned how soon trades leave the listing (:class:`multirun.api.polls.Learned`),
    that long after an accepted first send; then a few milliseconds later, backing off
    from there. A confirmation whose one send was accepted is recorded to ``polls``.

    Raises CloseUnconfirmed when a trade is still listed (or, for a close, not filled)
    after ``timeout_s``; a round whose reply was held up or whose listing could not be
    read at that deadline gets ``hold_s`` more (once). Raises OrderRejected when the
    server refuses a trade it listed when the request was sent. Raises Interrupted when
    ``interrupt`` is set during a pause between polls (closing is idempotent: the trades
    are simply not confirmed yet).
    """
    deadline = clock.monotonic() + timeout_s
    extended = False
    known: dict[str, Known] = dict.fromkeys(ids, UNKNOWN)
    last: dict[str, tuple[float, Known, ApiError | None]] = {}
    todo, to_send, sends = list(ids), list(ids), 0
    schedule = polls or schedules.SETTLE_POLLS
    plan = schedule.schedule()
    pauses = plan.pauses()
    first_sent_at = clock.monotonic()  # the learned delay runs from its return
    missed: float | None = None  # when the last listing that still showed some began
    while todo:
        stalled = False  # a reply held past the read timeout, or no listing to go by
        if to_send and sends < SETTLE_MAX_SENDS:
            error, acknowledged = desk.send(to_send)
            stalled = isinstance(error, NetworkError)
            sends += 1
            sent_at = clock.monotonic()
            last.update({i: (sent_at, known[i], error) for i in to_send})
            known.update(dict.fromkeys(acknowledged, SEEN))
            if sends == 1:
                first_sent_at = sent_at
                if error is None and plan.delay_s > 0:
                    # Recent closes took this long to leave the listing: a read before
                    # then would find the trades still listed (a request for nothing).
                    _pause(clock, interrupt, desk, todo,
                           min(first_sent_at + plan.delay_s, deadline) - sent_at)  # fmt: skip
        read_at = clock.monotonic()
        shown = desk.closed_in_history(deadline) if desk.endpoint == "close_orders" else None
        if (
            shown is not None
            and not set(todo) <= shown
            and read_at - first_sent_at < (HISTORY_ALONE_S)
        ):
            missed, to_send = read_at - first_sent_at, []  # not closed yet: poll again
            _pause(clock, interrupt, desk, todo, min(next(pauses), deadline - read_at))
            continue
        proven = shown or set()
        listed = set() if shown is not None and set(todo) <= shown else desk.listed(deadline)
        stalled = stalled or listed is None
        to_send, before = [], dict(known)
        if listed is not None:
            todo = [i for i in todo if not _gone(desk, i, listed, known, proven)]
            to_send = _due(todo, listed, last, clock.monotonic())
            if sends >= SETTLE_MAX_SENDS:
                to_send = []  # no more sends: poll the listing at the usual pace
            known.update({i: SEEN for i in todo if i in listed})
            if not todo and sends == 1 and last[ids[0]][2] is None:
                schedule.record(read_at - first_sent_at, missed)
            missed = read_at - first_sent_at
        now = clock.monotonic()
        if todo and now >= deadline and stalled and not extended:
            # A held reply used up the wait (the server may have refused the close of
            # a trade that had not filled yet, or the listing could not be read): one
            # more round of sending and reading decides, not the clock.
            deadline, extended = now + hold_s, True
            continue
        if todo and now >= deadline:
            raise CloseUnconfirmed(
                f"{desk.endpoint}: trade(s) {', '.join(todo)} still listed in {desk.listing} "
                f"or not filled after {timeout_s:g} s",
                endpoint=desk.endpoint,
            )
        # a trade query_order just found filled: the next listing decides it, at once
        learned = listed is not None and any(
            known[i] == SEEN != before[i] and i not in listed for i in todo
        )
        if todo and not to_send and not learned:
            _pause(clock, interrupt, desk, todo, min(next(pauses), deadline - now))


def _pause(
    clock: Clock, interrupt: StopSignal | None, desk: Desk, todo: list[str], seconds: float
) -> None:
    """Pause between polls; raises Interrupted when ``interrupt`` is set meanwhile."""
    stop = interrupt or _NEVER
    if seconds <= 0 and not stop.is_set():
        return
    if clock.wait(stop, max(0.0, seconds)) or stop.is_set():
        raise Interrupted(
            f"{desk.endpoint}: stop requested while confirming trade(s) "
            f"{', '.join(todo)} left {desk.listing}"
        )


def _gone(
    desk: Desk, trade_id: str, listed: set[str], known: dict[str, Known], proven: set[str]
) -> bool:
    """Whether ``trade_id`` is done with. For a close, a trade missing from the listing
    is closed only if it had filled before that listing was read (seen listed earlier,
    or query_order said so); an unfilled market order is not."""
    if trade_id in listed:
        return False
    if desk.endpoint != "close_orders" or known[trade_id] == SEEN or trade_id in proven:
        return True
    fill = desk.fill(trade_id)
    if fill == ABSENT:
        return True  # the server knows no such trade: nothing to close
    if fill == UNANSWERED:
        return False
    known[trade_id] = UNFILLED if fill == PENDING else SEEN
    return False  # filled: the next listing, read after this query, decides


def _due(
    todo: list[str],
    listed: set[str],
    last: dict[str, tuple[float, Known, ApiError | None]],
    now: float,
) -> list[str]:
    """The listed trades to send the request for again; raises a refusal of a trade
    that was listed when we sent it."""
    due = []
    for trade_id in todo:
        if trade_id not in listed:
            continue
        sent_at, known_then, error = last[trade_id]
        if isinstance(error, OrderRejected) and known_then == SEEN:
            raise error
        if known_then != SEEN and isinstance(error, OrderRejected):
            due.append(trade_id)  # refused before it filled: filled now
        else:
            pause = SETTLE_RESEND_S if error is None else SETTLE_RETRY_S
            if known_then == UNFILLED or now - sent_at >= pause:
                due.append(trade_id)
    return due
