"""bench/features_cost.py reads a tick's lateness from status.json: the grid arithmetic."""

from __future__ import annotations

from bench.features_cost import tick_lateness_ms


def late(began: str, offset_ms: int, interval: int = 5) -> float:
    found = tick_lateness_ms({"last_tick_utc": began, "tick_offset_ms": offset_ms}, interval)
    assert found is not None
    return round(found[1], 3)


def test_lateness_is_measured_from_grid_point_plus_offset() -> None:
    assert late("2026-12-07T18:00:05.135+00:00", 123) == 12.0
    assert late("2026-12-07T18:00:09.900+00:00", 123) == 4777.0  # late by most of a 5 s tick


def test_a_tick_on_time_read_at_ms_resolution_is_not_a_whole_interval_late() -> None:
    assert late("2026-12-07T18:00:05.122+00:00", 123) == 0.0  # cut to the ms: 1 ms "early"
    assert late("2026-12-07T18:00:01.000+00:00", 0, interval=1) == 0.0
