"""How often a worker touches its heartbeat (multirun.account.alarm: heartbeat_every, Heartbeat)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from multirun.account.alarm import Heartbeat, heartbeat_every
from multirun.account.ticker import FINAL_WAIT_S, StopFlag, Tick, Ticker
from tests.clocks import ManualClock

T0 = 1_800_000_000.0  # a whole minute


@pytest.mark.parametrize(
    ("watchdog_s", "every_s"), [(2, 1.0), (10, 1.0), (32, 3.2), (50, 5.0), (90, 5.0), (3600, 5.0)]
)
def test_a_tenth_of_the_watchdog_timeout_within_1_to_5_s(watchdog_s: float, every_s: float) -> None:
    assert heartbeat_every(watchdog_s) == pytest.approx(every_s)


def test_an_idle_ticker_waits_at_most_its_heartbeat_interval_and_beats_between() -> None:
    clock = ManualClock(T0 + 0.5)
    stop = StopFlag()
    beats: list[float] = []

    def on_tick(tick: Tick) -> None:
        stop.set()

    def beat() -> None:
        beats.append(clock.time())

    ticker = Ticker(60, on_tick, stop=stop, clock=clock, heartbeat=beat, heartbeat_s=5.0)
    ticker.run()
    stop.close()
    # 59.5 s to the grid point: eleven 5 s waits, one of 4.48 s and the short final wait
    assert [w for w in clock.waits if w > FINAL_WAIT_S] == pytest.approx([5.0] * 11 + [4.48])
    assert clock.waits[-1] == pytest.approx(FINAL_WAIT_S)
    assert len(beats) == 12  # one before each long wait: never more than 5 s apart
    assert max(b - a for a, b in itertools.pairwise(beats)) == pytest.approx(5.0)


def test_the_heartbeat_touches_its_file_at_most_every_half_second(tmp_path: Path) -> None:
    now = [100.0]
    touched: list[float] = []
    beat = Heartbeat(tmp_path / "heartbeat", on_beat=lambda: touched.append(now[0]),
                     clock=lambda: now[0])  # fmt: skip
    beat()  # the first call creates the file
    assert (tmp_path / "heartbeat").exists() and touched == [100.0]
    os.utime(tmp_path / "heartbeat", (1, 1))
    for now[0] in (100.1, 100.2, 100.49):  # a tick's requests, within ms of each other
        beat()
    assert touched == [100.0] and (tmp_path / "heartbeat").stat().st_mtime == 1
    now[0] = 100.5
    beat()
    assert touched == [100.0, 100.5] and (tmp_path / "heartbeat").stat().st_mtime > 1
