"""Confirmation poll schedules (:mod:`multirun.polls`): their pauses and request budgets."""

from __future__ import annotations

import itertools

import pytest

from multirun.polls import (
    LISTED_POLLS,
    OLD_LISTED_POLLS,
    OLD_SETTLE_POLLS,
    SETTLE_POLLS,
    Polls,
)


def polls_within(schedule: Polls, seconds: float) -> int:
    """Polls of a wait of ``seconds`` whose requests take no time, counted one by one:
    each pause is cut short at the wait's end, where the last poll is made."""
    polls, spent = 1, 0.0
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
