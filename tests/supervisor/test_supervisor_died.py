"""A supervisor that dies (issue 23, case 9): real supervisors on the simulator, the ledger
as judge. SIGKILLed, it leaves its BUY open (its worker exits closing nothing, as designed)
and tells nobody; the next start waits for that worker to be gone, adopts the trade (no
second order), says so in its first lines and sends a ``supervisor_died`` webhook; the
documented systemd unit restarts a dead supervisor."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.core.statefiles import read_supervisor
from multirun.sim import SimServer
from tests.conftest import wait_until
from tests.ops.test_status_without_config import start, ticked
from tests.services.test_notify import Receiver

__all__ = ["start"]  # the fixture, imported
ROOT = Path(__file__).resolve().parents[2]
HOLD = "class Hold:\n    def __init__(self, params):\n        pass\n\n" \
       "    def on_tick(self, ctx):\n        return 'BUY'\n"  # fmt: skip


def _config(tmp_path: Path, sim: SimServer) -> Path:
    module = f"diedstrat_{abs(hash(str(tmp_path))) % 10**9}"
    (tmp_path / f"{module}.py").write_text(HOLD)
    path = tmp_path / "runner.yaml"
    path.write_text(
        f"version: 1\nserver: {sim.base_url}\nstate_dir: state\nstop_timeout: 10\n"
        "notify:\n  - url: ${DIED_HOOK}\n    format: json\naccounts:\n"
        "  - name: a\n    user: alice\n    api_key: alice-key-1234\n    accountid: ACC-a\n"
        f"    runmode: livetest\n    strategy: {module}:Hold\n    instrument: BTCUSD\n"
        "    volume: 1\n    interval: 1s\n    on_stop: close\n"
    )
    return path


def _ours(sim: SimServer) -> list[dict[str, Any]]:
    return [o for o in sim.ledger() if str(o["orderRef"]).startswith("mr-a-")]


def _open(sim: SimServer) -> list[dict[str, Any]]:
    return [o for o in _ours(sim) if not o["closed_utc"]]


@pytest.mark.process
@pytest.mark.slow
def test_a_killed_supervisor_is_reported_and_its_trade_adopted_by_the_next_start(
    sim: SimServer, tmp_path: Path, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Receiver()
    try:
        monkeypatch.setenv("DIED_HOOK", f"http://127.0.0.1:{hook.server.server_address[1]}/h")
        config = _config(tmp_path, sim)
        state = tmp_path / "state"
        first = start(config)
        wait_until(lambda: ticked(state, "a", first, tmp_path / "runner.out") and _open(sim), 30)
        worker = read_supervisor(StateDir(state))["accounts"]["a"]["pid"]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
        wait_until(lambda: procutil.exited(worker), timeout=5)  # no orphan
        [held] = _open(sim)  # nobody applied on_stop: close

        second = start(config)
        wait_until(lambda: "adopted by its worker now" in (tmp_path / "runner.out").read_text(), 30)
        out = (tmp_path / "runner.out").read_text().split(f"supervisor pid {second.pid}")[1]
        first_lines = [line.split("| ", 1)[1] for line in out.splitlines()[1:3]]
        head = rf"the previous supervisor \(pid {first.pid}, started .*\) ended without a stop, "
        assert re.match(head + ".*; what its journals hold:$", first_lines[0]), first_lines
        trade = f"a: 1 trade(s) held: trade {held['tradeID']} BUY 1 BTCUSD"
        assert first_lines[1].startswith(trade), first_lines
        assert first_lines[1].endswith("adopted by its worker now (its on_stop applies at the "
                                       "next stop)"), first_lines  # fmt: skip
        wait_until(lambda: [b for _p, b in hook.posts if b.get("event") == "supervisor_died"], 10)
        wait_until(lambda: ticked(state, "a", second, tmp_path / "runner.out"), 30)
        assert [o["tradeID"] for o in _ours(sim)] == [held["tradeID"]]  # adopted: no 2nd BUY
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert _open(sim) == []  # the adopted trade closed by the next stop's on_stop
    finally:
        hook.close()


def test_the_documented_unit_restarts_a_dead_supervisor() -> None:
    text = (ROOT / "docs" / "operating.md").read_text()
    unit = text.split("ExecStart=/usr/local/bin/multirun start", 1)[1].split("```", 1)[0]
    assert "Restart=on-failure" in unit and "RestartSec=" in unit
