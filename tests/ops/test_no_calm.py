"""Never report a calm that is not there (issue 23, cases 3 and 11): real supervisors, the sim.

Case 3, a full disk, simulated without root (and despite it: chmod does not stop root):
mid-run, status.json and supervisor.json become non-empty directories, so neither can be
written (an atomic replace fails); the worker halts ("status.json could not be written").
The supervisor's memory (the worker's pipe, its control reply) carries the HALTED.
The notifier asks the supervisor too (its control socket), so the ``halted`` webhook goes
out within seconds. Case 11: ``rm -rf`` of the state directory under a running supervisor.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.core.statefiles import read_supervisor, read_worker_status
from multirun.ops import control_client, locate, stop
from multirun.services import metrics
from multirun.sim import SimServer
from tests.conftest import wait_until
from tests.ops.test_status_without_config import account, cli, module_for, start, ticked, write
from tests.services.test_notify import Receiver

__all__ = ["start"]  # the fixture, imported


def _unwritable(*paths: Path) -> None:
    """``paths`` can no longer be replaced (a write of each fails as on a full disk; a
    chmod would not stop root): each becomes a directory that is not empty."""
    for path in paths:
        path.unlink()
        (path / "full").mkdir(parents=True)


def _ticking(
    sim: SimServer, tmp_path: Path, start: Any, interval: str = "interval: 1s", top: str = ""
) -> tuple[Path, Any, Path]:
    """A supervisor running account ``a`` (its ``interval:`` line as given; ``top``: more
    top-level settings), once it ticked: its config, its process, its state dir."""
    text = account("a", module_for(tmp_path)).replace("interval: 1s", interval)
    config = write(tmp_path, sim.base_url, text)
    config.write_text(config.read_text().replace("accounts:\n", f"{top}accounts:\n", 1))
    proc = start(config)
    state = tmp_path / "state"
    wait_until(lambda: ticked(state, "a", proc, tmp_path / "runner.out"), timeout=30)
    return config, proc, state


@pytest.mark.process
@pytest.mark.slow
def test_a_full_disk_shows_halted_in_status_health_metrics_and_alerts(
    sim: SimServer, tmp_path: Path, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Receiver()
    monkeypatch.setenv("FULL_DISK_HOOK", f"http://127.0.0.1:{hook.server.server_address[1]}/h")
    try:
        _a_full_disk(sim, tmp_path, start, hook)
    finally:
        hook.close()


def _a_full_disk(sim: SimServer, tmp_path: Path, start: Any, hook: Receiver) -> None:
    notify = "notify:\n  - url: ${FULL_DISK_HOOK}\n    format: json\n"
    config, _proc, state = _ticking(
        sim, tmp_path, start, "interval: 1s\n    halt_after_failures: 1", notify
    )
    files = StateDir(state)
    # the file shows RUNNING before the disk fills (written at most every 0.1 s: it may
    # lag the control reply `ticked` read)
    wait_until(lambda: read_supervisor(files)["accounts"]["a"]["state"] == "RUNNING", timeout=5)
    _unwritable(files.account("a").status, files.supervisor_json)  # as on a full disk
    reply: dict[str, Any] = {}

    def halted() -> bool:
        reply.update(control_client.request(state, {"cmd": "status"}, timeout_s=5))
        return reply["accounts"]["a"].get("worker_state") == "HALTED"

    wait_until(halted, timeout=15)
    # the webhook, from the supervisor's memory (no file says HALTED), within seconds
    told = wait_until(lambda: [b for _p, b in hook.posts if b.get("event") == "halted"], 5)
    assert told[0]["account"] == "a" and "status.json could not be written" in told[0]["text"]
    assert re.search(r"ticks? in a row \(.+\)", told[0]["text"]), told  # and why (the OS's word)
    entry = reply["accounts"]["a"]
    assert "status.json could not be written" in entry["worker_reason"]
    assert not read_supervisor(files) and not read_worker_status(files.account("a"))

    shown = cli("status", str(config), "--json")
    assert shown.returncode == 3, shown.stdout + shown.stderr
    row = json.loads(shown.stdout)["accounts"][0]
    assert row["state"] == "HALTED", row
    assert "status.json could not be written" in row["halted_reason"]

    health = cli("health", str(config), "a")
    assert health.returncode == 1, health.stdout + health.stderr
    assert "HALTED: status.json could not be written" in health.stdout + health.stderr

    assert metrics.account_state(entry, {}) == "HALTED"


@pytest.mark.process
@pytest.mark.slow
def test_a_deleted_state_dir_does_not_lose_the_running_supervisor(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    config, proc, state = _ticking(sim, tmp_path, start)
    subprocess.run(["rm", "-rf", str(state)], check=True)

    found = locate.running(state)
    assert found is not None and found.pid == proc.pid
    shown = cli("status", str(config))
    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert f"running (pid {proc.pid})" in shown.stdout and "is gone" in shown.stdout

    lines: list[str] = []
    stop.stop(state, echo=lines.append)
    assert f"stopping the supervisor (pid {proc.pid})" in lines[0], lines
    assert procutil.exited(proc.pid)  # stop returned only once it was gone
    assert proc.wait(10) == 0, lines
    assert locate.running(state) is None
    assert not os.path.exists(state / "supervisor.pid")
