"""The checks of runner.yaml's money limits and trading hours that its schema cannot make.

The schema already refuses a limit that is not a positive number and an unknown key;
here: a time zone that the system's time zone database does not know, ``day_starts`` and
the ``from``/``to`` times (``HH:MM``, quoted), ``days`` (names and ranges), and a window
whose ``to`` is not after its ``from`` unless it says ``overnight: true`` (and an
overnight one whose ``to`` is not before its ``from``). Every problem is reported at once,
at the value's own place (in the account, or in ``defaults`` when it comes from there).
:mod:`multirun.config.loader` calls :func:`check_risk`.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from multirun.config.entry import AccountEntry
from multirun.config.findings import Findings, YamlPath
from multirun.config.specs import DayStart, parse_clock_time, parse_days


def check_risk(data: dict[str, Any], accounts: list[AccountEntry], found: Findings) -> None:
    """The top-level ``risk`` (its ``day_starts``), and each account's ``trading_hours``."""
    risk = data.get("risk")
    if isinstance(risk, dict) and "day_starts" in risk:
        _check_day_starts(risk["day_starts"], ("risk", "day_starts"), found)
    for account in accounts:
        if account.usable("trading_hours", found):
            hours = account.values["trading_hours"]
            if isinstance(hours, dict):
                check_trading_hours(hours, account.origin("trading_hours"), found)


def known_zone(name: str) -> bool:
    """Whether the time zone database knows ``name`` (``UTC``, ``Europe/London``...)."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_zone(name: object, path: YamlPath, found: Findings) -> None:
    if isinstance(name, str) and not found.is_bad(path) and not known_zone(name):
        found.add(
            path,
            f"unknown time zone {name!r}: use an IANA name such as UTC, Europe/London, "
            "America/New_York",
        )


def _check_day_starts(value: object, path: YamlPath, found: Findings) -> None:
    if not isinstance(value, str) or found.is_bad(path):
        return
    try:
        start = DayStart.parse(value)
    except ValueError as error:
        found.add(path, f'{error}; e.g. "00:00 UTC" or "17:00 America/New_York"')
        return
    _check_zone(start.tz, path, found)


def check_trading_hours(hours: dict[str, Any], path: YamlPath, found: Findings) -> None:
    """One ``trading_hours`` mapping: its days, times, time zone and the window's order."""
    if "days" in hours and isinstance(hours["days"], str) and not found.is_bad((*path, "days")):
        try:
            parse_days(hours["days"])
        except ValueError as error:
            found.add((*path, "days"), str(error))
    _check_zone(hours.get("tz", "UTC"), (*path, "tz"), found)
    times: dict[str, int] = {}
    for key in ("from", "to"):
        if key not in hours or found.is_bad((*path, key)):
            continue
        try:
            times[key] = parse_clock_time(hours[key], end=key == "to")
        except ValueError as error:
            found.add((*path, key), str(error))
    if len(times) == 2:
        _check_order(times["from"], times["to"], hours.get("overnight") is True, path, found)


def _check_order(start: int, end: int, overnight: bool, path: YamlPath, found: Findings) -> None:
    """``from`` before ``to``; or, with ``overnight: true``, ``to`` before ``from``."""
    shown = f"from {start // 60:02d}:{start % 60:02d} to {end // 60:02d}:{end % 60:02d}"
    if start == end:
        found.add((*path, "to"), f"{shown} is an empty window: `to` must differ from `from`")
    elif overnight and end > start:
        found.add(
            (*path, "overnight"),
            f"overnight: true, but {shown} ends the same day: remove `overnight`",
        )
    elif not overnight and end < start:
        found.add(
            (*path, "to"),
            f"{shown} ends before it starts: for a window that ends the next day, "
            "add `overnight: true`",
        )
