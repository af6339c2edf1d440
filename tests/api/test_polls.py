"""Confirmation poll schedules (:mod:`multirun.api.polls`): their pauses and request budgets."""

from __future__ import annotations

import itertools
import random

import pytest

from multirun.api.polls import (
    LEARN_CEILING_S,
    LEARN_FLOOR_S,
    LEARN_KEEP,
    LISTED_POLLS,
    OLD_LISTED_POLLS,
    OLD_SETTLE_POLLS,
    SETTLE_POLLS,
    Learned,
    Polls,
)


def polls_within(schedule: Polls, seconds: float) -> int:
    """Polls of a wait of ``seconds`` whose requests take no time, counted one by one:
    the first at ``delay_s`` (or the wait's end); each pause is cut short at the wait's
    end, where the last poll is made."""
    polls, spent = 1, min(seconds, schedule.delay_s)
    for pause in schedule.pauses():
        if spent >= seconds - 1e-9:
            return polls
        spent = min(seconds, spent + pause)
        polls += 1
    raise AssertionError("unreachable")


def test_pauses_start_short_and_back_off_to_the_longest() -> None:
    pauses = list(itertools.islice(Polls(0.004, 1.5, 0.05).pauses(), 9))
    assert pauses == pytest.approx([0.004, 0.006, 0.009, 0.0135, 0.02025, 0.030375,
                                    0.0455625, 0.05, 0.05])  # fmt: skip


def test_a_factor_of_one_is_a_fixed_pace() -> None:
    assert list(itertools.islice(OLD_LISTED_POLLS.pauses(), 3)) == [0.05] * 3


@pytest.mark.parametrize("bad", [(0.0, 2.0, 1.0), (0.1, 2.0, 0.05), (0.01, 0.5, 1.0)])
def test_a_schedule_that_would_not_back_off_is_refused(bad: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="bad poll schedule"):
        Polls(*bad)


@pytest.mark.parametrize(
    "schedule", [LISTED_POLLS, SETTLE_POLLS, OLD_LISTED_POLLS, OLD_SETTLE_POLLS]
)
@pytest.mark.parametrize("seconds", [0.0, 0.003, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 61.3])
def test_the_budget_counts_every_poll_a_wait_can_make(schedule: Polls, seconds: float) -> None:
    assert schedule.budget(seconds) == polls_within(schedule, seconds)


def test_the_new_schedules_cost_a_few_requests_more_than_the_old_ones() -> None:
    """A poll is a request against a rate-limited API: what the commit promises."""
    assert LISTED_POLLS.budget(5.0) == 106 and OLD_LISTED_POLLS.budget(5.0) == 101
    assert SETTLE_POLLS.budget(10.0) == 31 and OLD_SETTLE_POLLS.budget(10.0) == 24
    for ms in range(0, 60_000, 7):
        assert LISTED_POLLS.budget(ms / 1000) <= OLD_LISTED_POLLS.budget(ms / 1000) + 5
        assert SETTLE_POLLS.budget(ms / 1000) <= OLD_SETTLE_POLLS.budget(ms / 1000) + 8


def test_the_new_schedules_poll_soon_and_settle_at_the_old_pace() -> None:
    for new, old in ((LISTED_POLLS, OLD_LISTED_POLLS), (SETTLE_POLLS, OLD_SETTLE_POLLS)):
        assert new.first_s <= 0.005 < old.first_s
        assert new.max_s == old.max_s


# --- a delayed first poll, and schedules that learn ----------------------------------------


def test_a_delayed_first_poll_counts_from_the_delay() -> None:
    late = Polls(0.004, 1.5, 0.05, delay_s=0.02)
    assert late.budget(0.0) == 1  # the wait's end: one poll
    assert late.budget(0.019) == 1
    for ms in range(0, 6000, 7):
        assert late.budget(ms / 1000) == LISTED_POLLS.budget(max(0.0, ms / 1000 - 0.02))
    with pytest.raises(ValueError, match="bad poll schedule"):
        Polls(0.004, 1.5, 0.05, delay_s=-0.001)


def test_a_fixed_schedule_learns_nothing() -> None:
    LISTED_POLLS.record(0.02, None)
    assert LISTED_POLLS.schedule() is LISTED_POLLS


def test_nothing_learned_yet_is_the_base_schedule() -> None:
    learned = Learned(LISTED_POLLS)
    assert learned.estimate() is None and learned.schedule() is LISTED_POLLS
    learned.record(0.021, 0.019)
    assert learned.schedule() is LISTED_POLLS  # one confirmation is not enough


def test_the_first_poll_comes_the_learned_delay_after_the_send() -> None:
    learned = Learned(LISTED_POLLS)
    for _ in range(LEARN_KEEP):
        learned.record(0.021, 0.019)
    plan = learned.schedule()
    assert plan.delay_s == pytest.approx(0.021)
    assert plan.first_s == LISTED_POLLS.first_s and plan.max_s == LISTED_POLLS.max_s
    slow = Learned(SETTLE_POLLS)
    for _ in range(LEARN_KEEP):
        slow.record(0.2, 0.19)
    assert slow.schedule().first_s == pytest.approx(0.2 / 8)  # steps in proportion


def test_a_long_pause_before_the_find_is_not_taken_for_the_delay() -> None:
    learned = Learned(LISTED_POLLS)
    learned.record(0.146, 0.096)  # the base schedule's 50 ms pace overshot it
    learned.record(0.146, 0.096)
    assert learned.estimate() == pytest.approx(1.2 * 0.096 + LEARN_FLOOR_S)


def test_a_first_poll_that_finds_it_moves_the_next_one_earlier() -> None:
    learned = Learned(LISTED_POLLS)
    for _ in range(LEARN_KEEP):
        learned.record(0.030, 0.029)
    before = learned.estimate()
    assert before is not None
    for _ in range(LEARN_KEEP):
        learned.record(0.050, None)  # the caller came late: at most the planned delay
    after = learned.estimate()
    assert after is not None and after < before


def test_the_estimate_is_the_longest_of_the_last_few() -> None:
    learned = Learned(LISTED_POLLS)
    for ms in (900, 900, 900, 900, 10, 11, 12, 13, 14, 15, 16, 40):  # old ones forgotten
        learned.record(ms / 1000, ms / 1000)
    assert learned.estimate() == pytest.approx(0.040)  # the slowest of the last 8
    for _ in range(LEARN_KEEP):
        learned.record(0.012, None)  # the server got faster: the first poll follows it
    assert learned.estimate() == pytest.approx(0.9 * 0.012)
    for _ in range(LEARN_KEEP):
        learned.record(5.0, 4.9)
    assert learned.estimate() == LEARN_CEILING_S


def confirm(learned: Learned, delay_s: float) -> tuple[int, float]:
    """One confirmation of a change the server shows ``delay_s`` after the send: its
    polls (requests taking no time) and how long after the change the finding poll came."""
    plan = learned.schedule()
    at, polls, missed = plan.delay_s, 1, None
    pauses = plan.pauses()
    while at < delay_s:
        missed, at, polls = at, at + next(pauses), polls + 1
    learned.record(at, missed)
    return polls, at - delay_s


@pytest.mark.parametrize("tail_ms", [1.0, 5.0, 15.0])
def test_a_jittery_server_costs_about_one_poll_per_confirmation(tail_ms: float) -> None:
    """A fill listed 20 ms after the send plus a random tail (a loaded server, or a
    loaded machine): about one poll each, each a few tails late (a quartile pick made
    1.24-1.52 polls)."""
    rng = random.Random(7)
    learned = Learned(LISTED_POLLS)
    figures = [confirm(learned, 0.020 + rng.expovariate(1000 / tail_ms)) for _ in range(2000)]
    polls = sum(p for p, _ in figures) / len(figures)
    late_ms = 1000 * sum(late for _, late in figures) / len(figures)
    assert polls < 1.12
    assert late_ms < 4 * tail_ms


def test_a_delay_at_the_floor_reads_at_once() -> None:
    learned = Learned(LISTED_POLLS)
    for _ in range(LEARN_KEEP):
        learned.record(0.0005, None)
    assert learned.estimate() == 0.0 and learned.schedule().delay_s == 0.0


@pytest.mark.parametrize("base", [LISTED_POLLS, SETTLE_POLLS, OLD_LISTED_POLLS, OLD_SETTLE_POLLS])
@pytest.mark.parametrize("delay_ms", [0.5, 3, 20, 100, 400, 5000])
def test_a_learned_schedule_never_costs_more_than_its_base(base: Polls, delay_ms: float) -> None:
    """The budget stated with the schedules holds for the learned ones: they start later
    and their pauses are no shorter."""
    learned = Learned(base)
    for _ in range(LEARN_KEEP):
        learned.record(delay_ms / 1000, delay_ms / 1000)
    plan = learned.schedule()
    for ms in range(0, 12_000, 7):
        assert plan.budget(ms / 1000) <= base.budget(ms / 1000)
        assert plan.budget(ms / 1000) == polls_within(plan, ms / 1000)
