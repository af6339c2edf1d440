"""The API's time formats are compiled once, before the supervisor forks its workers."""

from __future__ import annotations

import _strptime

from multirun.api.models import API_TIME_PATTERNS, parse_api_time, prepare_time_parsing


def test_prepare_time_parsing_compiles_every_api_time_pattern() -> None:
    _strptime._regex_cache.clear()  # type: ignore[attr-defined]
    prepare_time_parsing()
    assert set(API_TIME_PATTERNS) <= set(_strptime._regex_cache)  # type: ignore[attr-defined]
    # what it prepared is what parsing uses
    assert parse_api_time("2026-11-30 12:00:00.250000").microsecond == 250000
    assert parse_api_time("2026-11-30T12:00:00").hour == 12
