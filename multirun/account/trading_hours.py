"""Whether an account's trading window is open at a moment, and when it ends or opens.

Pure functions of a :class:`~multirun.config.specs.TradingHours` and a Unix time (the
worker passes its clock's, :mod:`multirun.core.clock`, so tests run on a manual one). The
window opens on each of ``days`` at ``start`` (minutes after midnight in ``tz``) and
closes at ``end`` the same day, or the next with ``overnight``. Wall-clock times in the
zone: a window of 08:00-16:30 Europe/London follows summer time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from multirun.config.specs import TradingHours


def _windows(hours: TradingHours, t: float) -> list[tuple[float, float]]:
    """The windows (open, close) that opened on the day before ``t``'s local day, that
    day and the day after: every one that can hold ``t`` or come next."""
    zone = ZoneInfo(hours.tz)
    today = datetime.fromtimestamp(t, zone).date()
    out = []
    for offset in (-1, 0, 1, 2):
        day = today + timedelta(days=offset)
        if day.weekday() not in hours.days:
            continue
        midnight = datetime(day.year, day.month, day.day)
        opens = midnight + timedelta(minutes=hours.start)
        closes = midnight + timedelta(days=1 if hours.overnight else 0, minutes=hours.end)
        out.append(
            (opens.replace(tzinfo=zone).timestamp(), closes.replace(tzinfo=zone).timestamp())
        )
    return out


def is_open(hours: TradingHours, t: float) -> bool:
    """Whether the window is open at ``t`` (open at ``from``, closed at ``to``)."""
    return any(opens <= t < closes for opens, closes in _windows(hours, t))


def closes_at(hours: TradingHours, t: float) -> float | None:
    """When the window open at ``t`` closes; None when it is not open."""
    ends = [closes for opens, closes in _windows(hours, t) if opens <= t < closes]
    return max(ends) if ends else None


def opens_at(hours: TradingHours, t: float) -> float | None:
    """When the window next opens after ``t`` (None: not within two days, e.g. a weekend
    of a mon-fri window seen on a Friday night: the caller looks again later)."""
    later = [opens for opens, closes in _windows(hours, t) if opens > t]
    return min(later) if later else None
