"""The clock: what time it is, how to wait, and the time formats multirun writes.

Everything that reads the time takes a :class:`Clock` (tests pass a manual one);
everything that writes a time to a file, a log line or the terminal formats it here.
All times are UTC.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class StopSignal(Protocol):
    """What a wait can be cut short by (a stop flag)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    """The clocks multirun reads, and a wait a stop request can end early."""

    def time(self) -> float:
        """Wall-clock Unix time in seconds (UTC; may jump, may be skewed)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for deadlines)."""
        ...

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first; True if a stop was requested."""
        ...


class SystemClock:
    """The real clocks; waits on the stop flag, so a stop request wakes it at once."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


def utc(ts: float) -> datetime:
    """A Unix time as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def iso_ms(ts: float | None) -> str | None:
    """``2026-11-30T22:50:35.123+00:00`` (status files), or None."""
    return None if ts is None else utc(ts).isoformat(timespec="milliseconds")


def iso_s(ts: float) -> str:
    """``2026-11-30T22:50:35+00:00`` (log lines about grid points)."""
    return utc(ts).isoformat(timespec="seconds")


def iso_of(moment: datetime) -> str:
    """An ISO time to the second; a naive datetime is taken as UTC (the API's are)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.isoformat(timespec="seconds")


def log_stamp(ts: float | None = None) -> str:
    """``2026-11-30T22:50:35.123Z`` (JSON log lines)."""
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def hms(ts: float) -> str:
    """``22:50:35`` (terminal line prefixes)."""
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def parse_iso(text: str | None) -> float | None:
    """The Unix time of an ISO time written by this module, or None if unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def short_time(text: str | None, *, date: bool = False) -> str:
    """``HH:MM:SS`` (or ``YYYY-MM-DD HH:MM`` with ``date``) of an ISO time; ``-`` for none."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%d %H:%M" if date else "%H:%M:%S")
