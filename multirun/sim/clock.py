"""The simulator's clock: wall time plus an offset that tests can advance.

Everything time-dependent in the simulator (fills, holdtime, timeinforce, token
expiry, prices) reads :meth:`SimClock.now`, so advancing the clock moves all of it
at once without anyone sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
BAR_FORMAT = "%Y-%m-%d %H:%M:%S"


class SimClock:
    """Unix time in seconds, shifted by an offset that only grows."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every :meth:`advance` (the engine's sleep gets shorter)."""
        self._listeners.append(listener)

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0); returns the new offset."""
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")
        with self._lock:
            self._offset += seconds
            offset = self._offset
        for listener in self._listeners:
            listener()
        return offset

    @property
    def offset(self) -> float:
        return self._offset


def fmt_ts(t: float) -> str:
    """``YYYY-MM-DD hh:mm:ss.ffffff`` UTC, the API's timestamp format."""
    return datetime.fromtimestamp(t, UTC).strftime(TS_FORMAT)


def fmt_bar(t: float) -> str:
    """``YYYY-MM-DD hh:mm:ss`` UTC, the format of history_price bars."""
    return datetime.fromtimestamp(t, UTC).strftime(BAR_FORMAT)


def parse_ts(text: str) -> float:
    """Parse the API's timestamp (with or without microseconds, or a date) as UTC."""
    text = text.strip()
    for pattern in (
        TS_FORMAT,
        BAR_FORMAT,
        "%Y-%m-%dT%H:%M:%S.%f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
    ):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError(f"not a timestamp: {text!r}")
