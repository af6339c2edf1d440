"""A manual clock for tests: time moves only when told to, and a wait moves it."""

from __future__ import annotations

from multirun.core.clock import StopSignal


class ManualClock:
    """A :class:`multirun.core.clock.Clock` that only moves when told to.

    ``wait`` records the requested seconds and advances both clocks by them at once
    (unless a stop was requested), so a ticker runs without waiting.
    """

    def __init__(self, start: float = 1_700_000_000.0, mono: float = 1000.0) -> None:
        self.now = start
        self.mono = mono
        self.waits: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        self.waits.append(seconds)
        if stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return stop.is_set()
