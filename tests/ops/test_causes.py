"""Causes, not symptoms (issue 23, case 8): one line naming the real cause.

- a stop whose closes meet 5xx replies names the 5xx, not only the stop's own end
  (in-process sweep on the simulator, the ledger as judge);
- a metrics port already in use: the supervisor's last line names it (not "the
  simulator exited unexpectedly (signal SIGKILL)", which the failure's teardown did);
- a reload after editing state_dir reaches the supervisor started from that file, which
  refuses it (`! state_dir: ... cannot apply live`), not "no supervisor running".
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from multirun.account import ownership
from multirun.config import loader
from multirun.core.errors import EXIT_API
from multirun.ops.close import close_accounts
from multirun.sim import SimServer
from tests.conftest import SimCaller, wait_until
from tests.ops.test_close_beside import _held_by, _runner
from tests.ops.test_status_without_config import account, cli, module_for, start, ticked, write

__all__ = ["start"]  # the fixture, imported


@pytest.mark.slow
def test_a_stop_meeting_5xx_closes_names_the_5xx(
    sim_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv(ownership.RUNTIME_ENV, str(tmp_path / "locks"))
    caplog.set_level(logging.INFO, logger="multirun.api.client")  # as a worker logs (info)
    faults = {"error_rate": 1.0, "latency_ms": 1500.0, "endpoints": ["close_orders"]}
    sim: SimServer = sim_factory(faults=faults)
    runner = loader.load(_runner(tmp_path, sim.base_url))
    caller = SimCaller(sim, api_key="alice-key").login()
    _ref, trade = _held_by(tmp_path, "new", sim.base_url, caller)
    assert close_accounts(runner, ["new"], timeout_s=2.5) == EXIT_API  # on_stop close
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 trade(s) left open" in last and "(last error: " in last, last
    cause = last.split("(last error: ", 1)[1]
    assert "close_orders" in cause and "HTTP 5" in cause, last  # the 5xx, first
    assert trade in caller.opened()  # the ledger: still open, as said


@pytest.mark.process
def test_a_busy_metrics_port_and_an_edited_state_dir_are_named(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    config = write(tmp_path, sim.base_url, account("a", module_for(tmp_path)))
    proc = start(config)
    wait_until(lambda: ticked(tmp_path / "state", "a", proc, tmp_path / "runner.out"), 30)
    config.write_text(config.read_text().replace("state_dir: state", "state_dir: state2"))
    refused = cli("reload", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout.startswith("! state_dir: ") and "cannot apply live" in refused.stdout
    config.write_text(config.read_text().replace("state_dir: state2", "state_dir: state"))
    assert cli("stop", str(config)).returncode == 0

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = config.read_text().replace("accounts:", f"metrics:\n  listen: 127.0.0.1:{port}\n"
                                          "accounts:", 1)  # fmt: skip
        config.write_text(text.replace("server: " + sim.base_url, "server: sim"))
        started = cli("start", str(config))
    out = started.stdout + started.stderr
    assert started.returncode == 1, out
    last = started.stdout.strip().splitlines()[-1]
    assert last.endswith(f"the metrics server exited before it was ready: cannot "
                         f"serve /metrics on 127.0.0.1:{port}: [Errno 98] Address already "
                         "in use"), out  # fmt: skip
    assert "simulator exited unexpectedly" not in out and "still running" not in out, out
