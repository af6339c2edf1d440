"""An account whose instrument the server refuses never sends an order (issue 23, case 6):
its worker checks the instrument when it starts, before its first order, and exits FATAL
(78) with one line saying what to fix; in-process on the simulator, the ledger as judge."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from multirun.account import ownership
from multirun.account.process import run_account
from multirun.config import loader
from multirun.core.errors import EXIT_FATAL, FatalError
from multirun.sim import SimServer


def test_a_refused_instrument_is_fatal_before_any_order(
    sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ownership.RUNTIME_ENV, str(tmp_path / "locks"))
    path = tmp_path / "runner.yaml"
    path.write_text(
        f"version: 1\nserver: {sim.base_url}\nstate_dir: state\naccounts:\n"
        "  - name: btc\n    user: alice\n    api_key: alice-key\n    accountid: ACC-1\n"
        "    runmode: livetest\n    strategy: random\n    instrument: BTCUSDT\n"
        "    volume: 1\n    interval: 1s\n"
    )
    runner = loader.load(path)
    # without the check the worker would tick on: a graceful stop after 5 s ends it
    guard = threading.Timer(5.0, os.kill, (os.getpid(), signal.SIGTERM))
    guard.start()
    try:
        with pytest.raises(FatalError) as refused:
            run_account(runner, "btc")
    finally:
        guard.cancel()
    assert refused.value.exit_code == EXIT_FATAL
    assert "instrument BTCUSDT is refused by the server" in str(refused.value)
    assert "unknown symbol(s): BTCUSDT" in str(refused.value)
    assert sim.ledger() == []  # not one order sent
