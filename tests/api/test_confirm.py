"""Unit tests of :func:`multirun.api.confirm.settle` with a fake desk and a fake clock (no HTTP).

The fake desk is a tiny broker: trades are open (listed by opened_trades), pending
(acknowledged market orders not filled yet, or resting limit orders) or gone; each
request and listing is scripted or follows that state.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from multirun.api.confirm import (
    ABSENT,
    FILLED,
    PENDING,
    SETTLE_MAX_SENDS,
    SETTLE_RESEND_S,
    SETTLE_RETRY_S,
    UNANSWERED,
    Fill,
    settle,
)
from multirun.api.polls import OLD_SETTLE_POLLS, SETTLE_POLLS, Learned, Polls
from multirun.core.errors import (
    ApiError,
    AuthError,
    CloseUnconfirmed,
    Interrupted,
    NetworkError,
    OrderRejected,
    ServerError,
)
from tests.conftest import FakeClock

HOLD_S = 10.0  # the read timeout: how long one more round may take past the deadline

# What a send does: None (accepted and executed), "ignored" (accepted, no effect yet),
# "named" (accepted, the reply names the trades, no effect yet), or an error to return
# (the request failed, nothing executed).
Outcome = ApiError | str | None


class Desk:
    """A fake server for one close (or cancel) call."""

    def __init__(self, clock: FakeClock, endpoint: str = "close_orders") -> None:
        self.clock = clock
        self.endpoint = endpoint
        self.listing = "opened_trades" if endpoint == "close_orders" else "pending_trades"
        self.open: set[str] = set()  # listed
        self.unfilled: set[str] = set()  # known to query_order as PENDING, not listed
        self.outcomes: list[Outcome] = []  # scripted sends, then "accept"
        self.unreadable: list[bool] = []  # scripted listings: True = could not be read
        self.fills: list[Fill] = []  # scripted fill answers, then from the state
        self.sent: list[list[str]] = []
        self.reads = 0
        self.queries: list[str] = []
        self.history: set[str] | None = None  # what the history shows closed (None: unread)
        self.history_reads = 0
        self.on_read: Callable[[int], None] = lambda n: None  # before the n-th listing

    def send(self, ids: list[str]) -> tuple[ApiError | None, set[str]]:
        self.sent.append(list(ids))
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, AuthError):
            raise outcome
        if isinstance(outcome, ApiError):
            return outcome, set()
        if outcome == "ignored":
            return None, set()
        if outcome == "named":
            return None, set(ids)
        done = {i for i in ids if i in self.open}
        self.open -= done
        return None, done

    def listed(self, deadline: float) -> set[str] | None:
        self.reads += 1
        self.on_read(self.reads)
        if self.unreadable and self.unreadable.pop(0):
            return None
        return set(self.open)

    def closed_in_history(self, deadline: float) -> set[str] | None:
        if self.history is None:
            return None
        self.history_reads += 1
        return set(self.history)

    def fill(self, trade_id: str) -> Fill:
        assert self.endpoint == "close_orders", "a cancel never asks whether a trade filled"
        self.queries.append(trade_id)
        if self.fills:
            return self.fills.pop(0)
        return PENDING if trade_id in self.unfilled else FILLED


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 24, 8, 0, tzinfo=UTC))


@pytest.fixture
def desk(clock: FakeClock) -> Desk:
    return Desk(clock)


def run(
    desk: Desk, ids: list[str], timeout_s: float = 10.0, polls: Polls | Learned | None = None
) -> None:
    settle(desk, ids, timeout_s, clock=desk.clock, hold_s=HOLD_S, polls=polls)


def test_nothing_to_settle_sends_nothing(desk: Desk) -> None:
    run(desk, [])
    assert desk.sent == [] and desk.reads == 0


def test_an_accepted_close_is_confirmed_by_the_listing(desk: Desk, clock: FakeClock) -> None:
    desk.open = {"1", "2", "3"}
    start = clock.mono
    run(desk, ["1", "2"])
    assert desk.sent == [["1", "2"]]
    assert desk.reads == 1 and desk.open == {"3"}
    assert desk.queries == []  # named as submitted by the reply: no need to ask
    assert clock.mono == start  # no wait


def test_a_trade_missing_and_never_seen_is_asked_about_then_read_again(desk: Desk) -> None:
    desk.outcomes = ["ignored"]  # accepted, but the reply names nothing
    run(desk, ["1"])  # not listed; query_order: filled -> the next listing decides
    assert desk.queries == ["1"]
    assert desk.reads == 2 and len(desk.sent) == 1


def test_a_close_the_history_shows_is_done_without_asking_about_its_fill(desk: Desk) -> None:
    desk.outcomes = ["ignored"]  # accepted; the reply names nothing: its fill unknown
    desk.history = {"1"}  # the history shows its close
    run(desk, ["1"])
    assert (desk.history_reads, desk.reads, desk.queries, desk.sent) == (1, 0, [], [["1"]])


def test_a_history_without_the_close_is_a_poll_then_the_listing_decides(desk: Desk) -> None:
    desk.open = {"1"}
    desk.outcomes = ["ignored"]  # accepted, no effect yet: the trade stays listed
    desk.history = set()
    first: list[int] = []  # history reads when the listing is first read
    desk.on_read = lambda n: first.append(desk.history_reads) if n == 1 else None
    run(desk, ["1"], timeout_s=3.0, polls=Polls(0.1, 1.0, 0.1))
    assert 6 <= first[0] <= 7  # polls 0.1 s apart: the history alone until 0.5 s
    assert desk.sent[:2] == [["1"], ["1"]]  # sent again after 1 s: the listing showed it


def test_a_trade_the_server_does_not_know_is_done(desk: Desk) -> None:
    desk.outcomes = [OrderRejected("close_orders: HTTP 404 (refused)", status=404)]
    desk.fills = [ABSENT]
    run(desk, ["1"])
    assert desk.queries == ["1"] and len(desk.sent) == 1 and desk.reads == 1


def test_an_unanswered_fill_query_is_asked_again(desk: Desk) -> None:
    desk.outcomes = ["ignored"]
    desk.fills = [UNANSWERED, UNANSWERED, FILLED]
    run(desk, ["1"])
    assert desk.queries == ["1", "1", "1"]
    assert desk.reads == 4 and len(desk.sent) == 1


def test_an_unfilled_market_order_is_closed_once_it_fills(desk: Desk) -> None:
    desk.unfilled = {"1"}
    desk.outcomes = [OrderRejected("close_orders: HTTP 404 (refused): no open trade")]

    def fills_on_third_read(n: int) -> None:
        if n == 3:
            desk.unfilled.discard("1")
            desk.open.add("1")

    desk.on_read = fills_on_third_read
    run(desk, ["1"])
    # refused while unfilled; resent at once when it was listed (it filled meanwhile)
    assert desk.sent == [["1"], ["1"]]
    assert desk.open == set()


def test_a_pending_limit_order_is_not_closed(desk: Desk, clock: FakeClock) -> None:
    desk.unfilled = {"1"}
    desk.outcomes = [OrderRejected("close_orders: HTTP 404 (refused): no open trade")]
    start = clock.mono
    with pytest.raises(CloseUnconfirmed, match="not filled after 2 s") as info:
        run(desk, ["1"], timeout_s=2.0)
    assert info.value.endpoint == "close_orders"
    assert "1" in str(info.value) and "opened_trades" in str(info.value)
    assert 2.0 <= clock.mono - start < 2.5
    assert len(desk.sent) == 1  # nothing listed: nothing to send again


def test_a_refusal_of_a_listed_trade_is_final(desk: Desk) -> None:
    """The first refusal may have come before the trade filled (it was not known to be
    open then): sent once more. Refused again while seen listed: final."""
    desk.open = {"1"}
    refusal = OrderRejected("close_orders: HTTP 400 (refused): market closed")
    desk.outcomes = [refusal, refusal, None]
    with pytest.raises(OrderRejected, match="market closed"):
        run(desk, ["1"])
    assert len(desk.sent) == 2 and desk.open == {"1"}


@pytest.mark.parametrize(
    "failure", [NetworkError("close_orders: no reply"), ServerError("close_orders: HTTP 503")]
)
def test_after_an_ambiguous_failure_a_listed_trade_is_sent_again_soon(
    desk: Desk, clock: FakeClock, failure: ApiError
) -> None:
    desk.open = {"1"}
    desk.outcomes = [failure]
    start = clock.mono
    run(desk, ["1"])
    assert desk.sent == [["1"], ["1"]] and desk.open == set()
    assert SETTLE_RETRY_S <= clock.mono - start < SETTLE_RESEND_S


def test_an_ambiguous_failure_that_did_close_is_not_sent_again(desk: Desk) -> None:
    desk.open = {"1"}
    desk.outcomes = [ServerError("close_orders: HTTP 504")]
    desk.on_read = lambda n: desk.open.discard("1")  # it closed after all
    run(desk, ["1"])
    assert len(desk.sent) == 1
    assert desk.queries == ["1"]  # never seen listed: asked whether it had filled


def test_a_trade_still_listed_after_an_accepted_request_is_sent_again_after_a_second(
    desk: Desk, clock: FakeClock
) -> None:
    desk.open = {"1"}
    desk.outcomes = ["ignored"]
    start = clock.mono
    run(desk, ["1"])
    assert desk.sent == [["1"], ["1"]]
    assert SETTLE_RESEND_S <= clock.mono - start < SETTLE_RESEND_S + 0.5


def test_sends_are_bounded_and_the_call_ends_unconfirmed(desk: Desk, clock: FakeClock) -> None:
    desk.open = {"1"}
    desk.outcomes = ["ignored"] * 100
    start = clock.mono
    with pytest.raises(CloseUnconfirmed, match="still listed in opened_trades"):
        run(desk, ["1"], timeout_s=30.0)
    assert len(desk.sent) == SETTLE_MAX_SENDS
    assert 30.0 <= clock.mono - start < 30.5


def test_a_listing_unread_at_the_deadline_gets_one_more_round(desk: Desk, clock: FakeClock) -> None:
    desk.open = {"1"}
    desk.outcomes = ["ignored"]

    def held(n: int) -> None:
        if n == 2:
            clock.advance(10.0)  # held past the read timeout, past the deadline
        if n == 3:
            desk.open.discard("1")  # closed all along

    desk.on_read = held
    desk.unreadable = [False, True]
    run(desk, ["1"], timeout_s=10.0)
    assert desk.reads == 3


def test_the_extra_round_is_given_once(desk: Desk, clock: FakeClock) -> None:
    desk.open = {"1"}
    desk.outcomes = ["ignored"] * 100

    def held(n: int) -> None:
        clock.advance(HOLD_S)  # every listing held past the read timeout

    desk.on_read = held
    desk.unreadable = [True] * 100
    with pytest.raises(CloseUnconfirmed):
        run(desk, ["1"], timeout_s=10.0)
    assert desk.reads == 2


def test_a_close_whose_reply_is_held_past_the_deadline_gets_one_more_round(
    desk: Desk, clock: FakeClock
) -> None:
    desk.open = {"1"}

    def held_refusal(ids: list[str]) -> tuple[ApiError | None, set[str]]:
        desk.sent.append(list(ids))
        if len(desk.sent) == 1:
            clock.advance(10.0)  # e.g. refused (not filled yet), and the reply held back
            return NetworkError("close_orders: no reply within 10 s"), set()
        desk.open.discard("1")
        return None, {"1"}

    desk.send = held_refusal  # type: ignore[method-assign]
    run(desk, ["1"], timeout_s=10.0)
    assert len(desk.sent) == 2


def test_an_error_that_ends_the_call_propagates(desk: Desk) -> None:
    desk.open = {"1"}
    desk.outcomes = [AuthError("close_orders: HTTP 401", status=401)]
    with pytest.raises(AuthError):
        run(desk, ["1"])
    assert desk.reads == 0


def test_cancel_counts_a_trade_gone_from_pending_as_done(clock: FakeClock) -> None:
    desk = Desk(clock, "cancel_orders")
    desk.outcomes = [OrderRejected("cancel_orders: HTTP 404 (refused): no pending order")]
    run(desk, ["5"])  # never asked whether it filled (Desk.fill would fail)
    assert desk.sent == [["5"]] and desk.reads == 1


def test_cancel_unconfirmed_names_pending_trades(clock: FakeClock) -> None:
    desk = Desk(clock, "cancel_orders")
    desk.open = {"5"}
    desk.outcomes = ["ignored"] * 100
    with pytest.raises(CloseUnconfirmed, match=r"cancel_orders: trade.*5.*pending_trades"):
        run(desk, ["5"], timeout_s=3.0)


def test_a_stop_request_ends_the_polls_at_once(desk: Desk, clock: FakeClock) -> None:
    stop = threading.Event()
    desk.open = {"1"}
    desk.outcomes = ["ignored"] * SETTLE_MAX_SENDS  # accepted, never closes
    desk.on_read = lambda n: stop.set() if n == 2 else None
    with pytest.raises(Interrupted, match="stop requested while confirming trade"):
        settle(desk, ["1"], 10.0, clock=clock, hold_s=HOLD_S, interrupt=stop)
    assert desk.reads == 2  # no poll after the stop request


# --- the poll schedule -------------------------------------------------------------------


def closes_on_read(desk: Desk, n: int) -> None:
    """The accepted close of "1" lands just before the ``n``-th listing."""
    desk.open = {"1"}
    desk.outcomes = ["ignored"]
    desk.on_read = lambda read: desk.open.discard("1") if read == n else None


def test_polls_start_a_few_ms_after_the_close_then_back_off(desk: Desk, clock: FakeClock) -> None:
    closes_on_read(desk, 5)
    run(desk, ["1"])
    assert clock.sleeps == list(itertools.islice(SETTLE_POLLS.pauses(), 4))
    assert clock.sleeps[0] <= 0.005 and clock.sleeps == sorted(clock.sleeps)
    assert desk.reads == 5 and len(desk.sent) == 1  # within the second: not sent again


def test_the_schedule_can_be_passed_in(desk: Desk, clock: FakeClock) -> None:
    closes_on_read(desk, 4)
    run(desk, ["1"], polls=OLD_SETTLE_POLLS)
    assert clock.sleeps == [0.05, 0.1, 0.2]


def test_the_default_schedule_is_read_at_each_call(
    desk: Desk, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("multirun.api.polls.SETTLE_POLLS", Polls(0.03, 1.0, 0.03))
    closes_on_read(desk, 3)
    run(desk, ["1"])
    assert clock.sleeps == [0.03, 0.03]


def test_a_long_wait_costs_no_more_requests_than_the_budget(desk: Desk, clock: FakeClock) -> None:
    desk.open = {"1"}
    desk.outcomes = ["ignored"] * 100  # accepted, never closes: polled to the deadline
    with pytest.raises(CloseUnconfirmed):
        run(desk, ["1"], timeout_s=30.0)
    # a resend is read at once after it: one listing more per send after the first
    assert desk.reads <= SETTLE_POLLS.budget(30.0) + len(desk.sent) - 1
    assert max(clock.sleeps) <= SETTLE_POLLS.max_s


# --- a schedule that learns how soon closes show -------------------------------------------


def closes_after(desk: Desk, clock: FakeClock, seconds: float) -> None:
    """The accepted close of "1" leaves the listing ``seconds`` after it was sent."""
    desk.open, desk.outcomes, desk.reads, desk.sent = {"1"}, ["named"], 0, []
    gone_at = clock.mono + seconds
    desk.on_read = lambda read: desk.open.discard("1") if clock.mono >= gone_at - 1e-9 else None


def test_a_learned_schedule_reads_first_when_closes_showed(desk: Desk, clock: FakeClock) -> None:
    learned = Learned(SETTLE_POLLS)
    closes_after(desk, clock, 0.02)
    run(desk, ["1"], polls=learned)
    assert desk.reads > 1  # nothing learned: read at once, then back off
    closes_after(desk, clock, 0.02)
    run(desk, ["1"], polls=learned)
    start = clock.mono
    closes_after(desk, clock, 0.02)
    run(desk, ["1"], polls=learned)
    assert desk.reads == 1 and clock.mono - start >= 0.02  # one read, once it can show
    assert len(desk.sent) == 1 and learned.estimate() is not None


def test_a_stop_request_ends_the_learned_first_pause(desk: Desk, clock: FakeClock) -> None:
    learned = Learned(SETTLE_POLLS)
    for _ in range(3):
        closes_after(desk, clock, 0.02)
        run(desk, ["1"], polls=learned)
    stop = threading.Event()
    stop.set()
    closes_after(desk, clock, 0.02)
    with pytest.raises(Interrupted, match="stop requested while confirming trade"):
        settle(desk, ["1"], 10.0, clock=clock, hold_s=HOLD_S, interrupt=stop, polls=learned)
    assert desk.reads == 0 and len(desk.sent) == 1


def test_a_failed_or_repeated_send_teaches_nothing(desk: Desk, clock: FakeClock) -> None:
    learned = Learned(SETTLE_POLLS)
    for _ in range(3):
        desk.open, desk.reads, desk.on_read = {"1"}, 0, lambda n: None
        desk.outcomes = [NetworkError("lost", endpoint="close_orders")]
        run(desk, ["1"], polls=learned)
    assert learned.estimate() is None
