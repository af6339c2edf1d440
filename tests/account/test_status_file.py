"""A worker's status.json: condition changes written at once, progress at a bounded rate.

An account ticking more often than every ``PROGRESS_EVERY_S`` seconds writes a tick that
only made progress at most that often; its state, errors, halts, stops and first tick
are written at once; a write that failed is tried again at the next call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from multirun.account import status_file as worker_status
from multirun.account.status_file import PROGRESS_EVERY_S, StatusFile
from multirun.core.statedir import AccountDir


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "alpha", "pid": 1, "state": "RUNNING", "ticks": 1, "last_error": None,
        "halted_reason": None, "stop_reason": None, "orders_sent": 0, "open_trades": 0,
        "last_tick_utc": "t1", "blocked_by": None, "uncertain_orders": [],
    }  # fmt: skip
    return base | changes


def on_disk(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_progress_of_a_fast_account_is_written_at_a_bounded_rate(
    tmp_path: Path, clock: Clock
) -> None:
    account = AccountDir(tmp_path)
    path = account.status
    file = StatusFile(account, interval_s=1, clock=clock)
    file.write(lambda: status(ticks=1))
    clock.now += 1.0
    file.write(lambda: status(ticks=2, orders_sent=1, open_trades=1, last_tick_utc="t2"))
    assert on_disk(path)["ticks"] == 1  # progress alone: not yet
    clock.now += PROGRESS_EVERY_S
    file.write(lambda: status(ticks=3, orders_sent=1, open_trades=1, last_tick_utc="t3"))
    assert on_disk(path)["ticks"] == 3 and on_disk(path)["open_trades"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"state": "HALTED", "halted_reason": "5 failed ticks"},
        {"last_error": "ServerError: balance: HTTP 500"},
        {"stop_reason": "SIGTERM"},
        {"state": "STOPPED"},
        {"blocked_by": "max_open_trades (1) reached"},
        {"uncertain_orders": ["mr-alpha-ABCDEF-3"]},
        {"consecutive_failures": 1},
    ],
)
def test_a_change_of_condition_is_written_at_once(
    tmp_path: Path, clock: Clock, change: dict[str, Any]
) -> None:
    account = AccountDir(tmp_path)
    path = account.status
    file = StatusFile(account, interval_s=1, clock=clock)
    file.write(lambda: status())
    clock.now += 0.1
    file.write(lambda: status(ticks=2, **change))
    written = on_disk(path)
    assert written["ticks"] == 2 and all(written[k] == v for k, v in change.items())


def test_the_first_tick_is_written_at_once(tmp_path: Path, clock: Clock) -> None:
    account = AccountDir(tmp_path)
    path = account.status
    file = StatusFile(account, interval_s=1, clock=clock)
    file.write(lambda: status(ticks=0, last_tick_utc=None))
    clock.now += 0.5
    file.write(lambda: status(ticks=1))
    assert on_disk(path)["ticks"] == 1


def test_force_writes_now(tmp_path: Path, clock: Clock) -> None:
    account = AccountDir(tmp_path)
    path = account.status
    file = StatusFile(account, interval_s=1, clock=clock)
    file.write(lambda: status(ticks=1))
    file.write(lambda: status(ticks=2), force=True)
    assert on_disk(path)["ticks"] == 2


@pytest.mark.parametrize("interval_s", [PROGRESS_EVERY_S, 5, 60])
def test_an_account_ticking_slower_writes_every_tick(
    tmp_path: Path, clock: Clock, interval_s: int
) -> None:
    account = AccountDir(tmp_path)
    path = account.status
    file = StatusFile(account, interval_s=interval_s, clock=clock)
    for ticks in range(1, 4):
        file.write(lambda n=ticks: status(ticks=n))  # type: ignore[misc]
        assert on_disk(path)["ticks"] == ticks


def test_a_failed_write_is_tried_again_at_the_next_call(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = AccountDir(tmp_path)
    path = account.status
    file = StatusFile(account, interval_s=1, clock=clock)
    file.write(lambda: status(ticks=1))
    real = worker_status.write_worker_status

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(worker_status, "write_worker_status", full_disk)
    file.write(lambda: status(ticks=2, last_error="boom"))
    assert file.failing and on_disk(path)["ticks"] == 1
    monkeypatch.setattr(worker_status, "write_worker_status", real)
    clock.now += 0.1  # progress alone, well within the rate: written since the last failed
    file.write(lambda: status(ticks=3, last_error="boom"))
    assert not file.failing and on_disk(path)["ticks"] == 3
