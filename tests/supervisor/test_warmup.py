"""The supervisor's warm-up: a real worker's code run before the forks, leaving nothing."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from multirun.account.journal import reader
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.redact import Secret
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from multirun.supervisor import launch, warmup


def test_the_warm_up_worker_trades_through_every_step(sim: SimServer, tmp_path: Path) -> None:
    assert warmup.run_a_worker(sim.base_url, tmp_path, time.monotonic() + 30)
    journal = StateDir(tmp_path).account("warmup").journal
    trades = reader.read(journal, "warmup").trades
    closed = [t for t in trades if t.state == "CLOSED"]
    # opened, confirmed, closed, priced: the code every worker runs at each of its ticks
    assert closed and all(t.realized_pl is not None for t in closed)


def test_the_warm_up_is_cut_short_at_its_deadline(sim: SimServer, tmp_path: Path) -> None:
    assert not warmup.run_a_worker(sim.base_url, tmp_path, time.monotonic() - 1)


def test_the_warm_up_leaves_no_thread_descriptor_or_log_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    threads, fds = set(threading.enumerate()), set(os.listdir("/proc/self/fd"))
    disabled = logging.root.manager.disable
    with caplog.at_level(logging.DEBUG):
        assert warmup.warm_worker_code()
    assert set(threading.enumerate()) <= threads  # the simulator's and the watchdog's ended
    assert set(os.listdir("/proc/self/fd")) <= fds
    assert logging.root.manager.disable == disabled
    assert not caplog.records  # nothing reaches the supervisor's output


def test_a_proxy_in_the_environment_skips_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # never contacted
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    started = time.monotonic()
    assert not warmup.warm_worker_code()
    assert time.monotonic() - started < 5


def test_a_failing_warm_up_never_stops_a_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str, state_dir: Path, deadline: float) -> bool:
        raise OSError("No space left on device")

    monkeypatch.setattr(warmup, "run_a_worker", broken)
    assert not warmup.warm_worker_code()


def accounts(n: int) -> tuple[AccountSpec, ...]:
    return tuple(
        AccountSpec(
            name=f"a{i}",
            user="u",
            api_key=Secret("k-0123456789"),
            accountid=f"A{i}",
            runmode="livetest",
            strategy="random",
            instrument="BTCUSD",
            volume=1.0,
            interval_s=5,
        )
        for i in range(n)
    )


def test_preload_warms_then_freezes_from_enough_accounts(tmp_path: Path) -> None:
    many, few = accounts(launch.WARM_FROM_ACCOUNTS), accounts(launch.WARM_FROM_ACCOUNTS - 1)
    runner = RunnerSpec(path=tmp_path / "runner.yaml", server="http://127.0.0.1:9",
                        state_dir=tmp_path, accounts=many)  # fmt: skip
    frozen: list[int] = []
    try:
        launch.preload(runner, few, warm=lambda: frozen.append(-1))
        assert not frozen  # too few to pay for it
        launch.preload(runner, many, warm=lambda: frozen.append(gc.get_freeze_count()))
        assert frozen  # warmed, before the freeze took what the warm-up left
        assert gc.get_freeze_count() >= frozen[0]
    finally:
        gc.unfreeze()
