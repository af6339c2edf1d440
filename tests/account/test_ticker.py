"""The ticker: grid alignment, no drift, one catch-up tick, sleeping, stopping."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time

import pytest

from multirun.account.ticker import (
    FINAL_WAIT_S,
    HEARTBEAT_S,
    MAX_OFFSET_FRACTION,
    TICK_SPREAD_S,
    StopFlag,
    Tick,
    Ticker,
    grid_ceil,
    grid_floor,
    wake_offset,
)
from tests.clocks import ManualClock

T0 = 1_700_000_000.0  # a multiple of 1, 5 and 10 seconds (not of 60)


def run_ticks(interval: int, start: float, count: int, work=lambda tick, clock: None):
    """Run a ticker on a manual clock for ``count`` ticks; returns the ticks and the clock."""
    clock = ManualClock(start)
    stop = StopFlag()
    seen: list[Tick] = []

    def on_tick(tick: Tick) -> None:
        seen.append(tick)
        work(tick, clock)
        if len(seen) >= count:
            stop.set()

    Ticker(interval, on_tick, stop=stop, clock=clock).run()
    stop.close()
    return seen, clock


def test_grid_helpers() -> None:
    assert grid_ceil(61.2, 60) == 120
    assert grid_ceil(120.0, 60) == 120
    assert grid_floor(119.9, 60) == 60
    assert grid_ceil(7.0, 5) == 10


@pytest.mark.parametrize("interval", [1, 5, 60, 300])
def test_ticks_land_on_the_utc_grid(interval: int) -> None:
    ticks, _ = run_ticks(interval, T0 + 0.37, 5)
    assert all(t.due % interval == 0 for t in ticks)
    assert [t.due - ticks[0].due for t in ticks] == [i * interval for i in range(5)]
    assert ticks[0].due == grid_ceil(T0 + 0.37, interval)
    assert all(t.lateness == 0 for t in ticks)


def test_a_one_minute_account_ticks_at_second_zero() -> None:
    ticks, _ = run_ticks(60, 1_700_000_017.5, 3)
    assert [t.due_utc.second for t in ticks] == [0, 0, 0]


def test_slow_ticks_do_not_drift() -> None:
    # Each tick takes 0.7 of the interval: schedule alone would run at 0, 1.7, 3.4...
    ticks, _ = run_ticks(1, T0, 10, work=lambda tick, clock: clock.advance(0.7))
    assert [t.due - T0 for t in ticks] == list(range(10))
    assert all(t.started == t.due for t in ticks)


def test_a_missed_tick_runs_once_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def work(tick: Tick, clock: ManualClock) -> None:
        clock.advance(3.5 if tick.number == 2 else 0.1)

    with caplog.at_level(logging.WARNING, logger="multirun.ticker"):
        ticks, _ = run_ticks(1, T0, 5, work=work)
    # Tick 2 (due +1) ran until +4.5: +2, +3 and +4 are collapsed into one catch-up tick
    # for +4 started at +4.5; then the grid resumes at +5.
    assert [t.due - T0 for t in ticks] == [0, 1, 4, 5, 6]
    assert ticks[2].missed == 2
    assert ticks[2].lateness == pytest.approx(0.5)
    assert "missed 2 tick(s)" in caplog.text


def test_an_overrun_shorter_than_an_interval_runs_the_next_tick_late_once() -> None:
    def work(tick: Tick, clock: ManualClock) -> None:
        clock.advance(1.5 if tick.number == 1 else 0.1)

    ticks, _ = run_ticks(1, T0, 3, work=work)
    assert [t.due - T0 for t in ticks] == [0, 1, 2]
    assert ticks[1].lateness == pytest.approx(0.5)
    assert ticks[1].missed == 0


def test_the_ticker_sleeps_until_the_next_tick_instead_of_polling() -> None:
    _, clock = run_ticks(10, T0 + 1, 3, work=lambda tick, clock: clock.advance(2))
    # 9 s to the first grid point, then 8 s per gap, in waits of at most a second
    # (the heartbeat is touched between them), each gap ending in one short final wait
    assert all(0 < w <= 1.0 for w in clock.waits)
    assert sum(clock.waits) == pytest.approx(9 + 8 + 8)
    assert len(clock.waits) == (9 + 1) + (8 + 1) + (8 + 1)
    finals = [i for i, w in enumerate(clock.waits) if w <= FINAL_WAIT_S + 1e-9]
    assert finals == [9, 9 + 9, 9 + 9 + 9]  # the last wait of each gap, and only that one
    assert all(clock.waits[i] == pytest.approx(FINAL_WAIT_S) for i in finals)


def test_the_wait_before_a_tick_is_two_phased_on_every_interval() -> None:
    # A long select/poll timeout ends up to 0.1% late (the kernel's timer slack): so no
    # wait that ends at a tick is longer than FINAL_WAIT_S, at 1 s as at 1 h.
    for interval in (1, 60, 3600):
        _, clock = run_ticks(interval, T0 + 0.5, 2)
        assert clock.waits[-1] == pytest.approx(FINAL_WAIT_S)
        assert max(clock.waits) <= HEARTBEAT_S


@pytest.mark.parametrize("interval", [1, 5, 60, 3600])
def test_wake_offsets_are_fixed_small_and_spread(interval: int) -> None:
    names = [f"acct-{i:03d}" for i in range(200)]
    offsets = [wake_offset(name, interval) for name in names]
    assert offsets == [wake_offset(name, interval) for name in names]  # deterministic
    bound = min(TICK_SPREAD_S, MAX_OFFSET_FRACTION * interval)
    assert all(0 <= o < bound for o in offsets)
    assert all(round(o * 1000) == pytest.approx(o * 1000) for o in offsets)  # whole ms
    assert len(set(offsets)) >= 0.5 * min(len(names), round(bound * 1000))  # not bunched


@pytest.mark.parametrize("interval", [1, 5, 60, 3600])
def test_wake_offsets_of_peers_are_evenly_spaced_in_name_order(interval: int) -> None:
    names = [f"acct-{i:03d}" for i in range(200)]
    shuffled = random.Random(3).sample(names, len(names))
    offsets = [wake_offset(name, interval, shuffled) for name in names]
    assert offsets == [wake_offset(name, interval, names) for name in names]  # any order
    bound = min(TICK_SPREAD_S, MAX_OFFSET_FRACTION * interval)
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < bound
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert min(gaps) == pytest.approx(bound / len(names), abs=2e-6)  # none bunched
    assert wake_offset("stranger", interval, names) == wake_offset("stranger", interval)


def test_tick_spread_bounds_the_offsets_and_zero_turns_them_off() -> None:
    names = [f"acct-{i:03d}" for i in range(500)]
    at_60 = [wake_offset(name, 60, names) for name in names]
    assert at_60[-1] == pytest.approx(TICK_SPREAD_S * 499 / 500)  # 5 s, not the old 250 ms
    assert min(b - a for a, b in itertools.pairwise(at_60)) == pytest.approx(0.01)
    assert max(wake_offset(name, 60, names, spread_s=0.5) for name in names) < 0.5
    assert max(wake_offset(name, 4, names, spread_s=30) for name in names) < 1.0  # a quarter
    assert {wake_offset(name, 60, names, spread_s=0) for name in names} == {0.0}
    ticker = Ticker(60, lambda tick: None, stop=StopFlag(), account="acct-499", peers=names,
                    spread_s=0.5)  # fmt: skip
    assert ticker.offset_s == wake_offset("acct-499", 60, names, 0.5) > 0.49
    ticker.stop.close()


def test_an_offset_delays_the_start_but_the_tick_is_for_the_grid_point() -> None:
    clock = ManualClock(T0 + 0.37)
    stop = StopFlag()
    seen: list[Tick] = []

    def on_tick(tick: Tick) -> None:
        seen.append(tick)
        if len(seen) == 3:
            stop.set()

    ticker = Ticker(5, on_tick, stop=stop, clock=clock, account="acct-007")
    assert ticker.offset_s == wake_offset("acct-007", 5) > 0
    ticker.run()
    stop.close()
    assert [t.due - T0 for t in seen] == [5, 10, 15]  # tick_utc stays on the grid
    assert all(t.offset == ticker.offset_s for t in seen)
    assert all(t.started == pytest.approx(t.due + t.offset) for t in seen)
    assert all(t.lateness == pytest.approx(0, abs=1e-6) for t in seen)  # from the wake-up
    assert all(t.grid_lateness == pytest.approx(t.offset) for t in seen)
    assert clock.waits[-1] == pytest.approx(FINAL_WAIT_S)


def test_an_offset_must_stay_within_the_interval() -> None:
    stop = StopFlag()
    with pytest.raises(ValueError, match="offset"):
        Ticker(1, lambda tick: None, stop=stop, offset_s=1.0)
    assert Ticker(1, lambda tick: None, stop=stop).offset_s == 0.0
    stop.close()


def test_idle_waits_touch_the_heartbeat_at_least_every_second() -> None:
    clock = ManualClock(T0 + 0.5)
    stop = StopFlag()
    beats: list[float] = []

    def on_tick(tick: Tick) -> None:
        if tick.number == 2:
            stop.set()

    ticker = Ticker(
        5, on_tick, stop=stop, clock=clock, heartbeat=lambda: beats.append(clock.time())
    )
    ticker.run()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert beats and max(gaps) <= 1.0 + 1e-9
    assert beats[0] == T0 + 0.5 and beats[-1] >= T0 + 9


def test_during_a_tick_next_due_is_the_following_grid_point() -> None:
    clock = ManualClock(T0 + 0.2)
    stop = StopFlag()
    seen: list[tuple[float, float | None]] = []

    def on_tick(tick: Tick) -> None:
        seen.append((tick.due, ticker.next_due))
        if len(seen) == 3:
            stop.set()

    ticker = Ticker(5, on_tick, stop=stop, clock=clock)
    ticker.run()
    stop.close()
    assert [(due - T0, (nxt or 0) - T0) for due, nxt in seen] == [(5, 10), (10, 15), (15, 20)]


def test_a_stop_request_wakes_a_real_sleep_promptly() -> None:
    stop = StopFlag()
    ticks: list[Tick] = []
    ticker = Ticker(3600, ticks.append, stop=stop)
    thread = threading.Thread(target=ticker.run)
    begin = time.monotonic()
    thread.start()
    stop.set("test")
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - begin < 1
    assert stop.reason == "test"
    stop.close()


def test_an_exception_in_a_tick_does_not_stop_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def work(tick: Tick, clock: ManualClock) -> None:
        if tick.number == 1:
            raise RuntimeError("boom")

    ticks, _ = run_ticks(1, T0, 3, work=work)
    assert len(ticks) == 3
    assert "RuntimeError: boom" in caplog.text


@pytest.mark.slow
def test_real_clock_ticks_are_punctual() -> None:
    stop = StopFlag()
    seen: list[Tick] = []

    def on_tick(tick: Tick) -> None:
        seen.append(tick)
        if len(seen) == 2:
            stop.set()

    Ticker(1, on_tick, stop=stop, account="acct-real").run()
    stop.close()
    assert seen[1].due - seen[0].due == 1
    assert all(t.offset == wake_offset("acct-real", 1) for t in seen)
    assert all(0 <= t.lateness < 0.05 for t in seen)
