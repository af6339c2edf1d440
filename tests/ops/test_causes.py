"""Causes, not symptoms (issue 23, case 8): one line naming the real cause; and case 5
(`multirun close` beside a running supervisor) as a user runs it.

- a stop whose closes meet 5xx replies names the 5xx, not only the stop's own end
  (in-process sweep on the simulator, the ledger as judge);
- a metrics port already in use: the supervisor's last line names it (not "the
  simulator exited unexpectedly (signal SIGKILL)", which the failure's teardown did);
- a reload after editing state_dir reaches the supervisor started from that file, which
  refuses it (`! state_dir: ... cannot apply live`), not "no supervisor running".
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import requests

from multirun.account import ownership
from multirun.account.journal.store import Journal
from multirun.config import loader
from multirun.core.errors import EXIT_API
from multirun.core.statedir import StateDir
from multirun.core.statefiles import read_supervisor, read_worker_status
from multirun.ops.close import close_accounts
from multirun.sim import SimServer
from tests.conftest import SimCaller, wait_until
from tests.ops.test_close_beside import _held_by, _runner
from tests.ops.test_status_without_config import account, cli, start, ticked, write

__all__ = ["start"]  # the fixture, imported
HOLD = "class Hold:\n    def __init__(self, params):\n        pass\n\n" \
       "    def on_tick(self, ctx):\n        return 'BUY'\n"  # fmt: skip


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


def _sim_ledger(state: Path) -> list[dict[str, Any]]:
    """The embedded simulator's ledger (GET /sim/ledger), at the URL its supervisor announced
    (none until supervisor.json says it: the worker's first tick may show before that)."""
    announced = read_supervisor(StateDir(state)).get("announced") or {}
    if "sim" not in announced:
        return []
    base = announced["sim"].split("/rest/", 1)[0]
    reply = requests.get(f"{base}/sim/ledger", timeout=5)
    return list(reply.json()["orders"])


def _journal_row(state: Path, name: str, ref: str) -> Any:
    journal = Journal(StateDir(state).account(name).journal, f"mr-{name}-", lock=None)
    try:
        return journal.get(ref)
    finally:
        journal.close()


@pytest.mark.process
def test_close_beside_a_running_supervisor_then_two_causes_named(
    tmp_path: Path, start: Any
) -> None:
    """Case 5 as a user would, `server: sim`: rename an account holding a BUY (on_stop:
    keep), reload, `multirun close CONFIG OLD` with no --server beside the new name's
    worker; then case 8: an edited state_dir reloaded, a busy metrics port."""
    module = f"causestrat_{abs(hash(str(tmp_path))) % 10**9}"
    (tmp_path / f"{module}.py").write_text(HOLD)
    body = account("old", module).replace(f"{module}:Flat", f"{module}:Hold")
    config = write(tmp_path, "sim", body + "    on_stop: keep\n")
    state = tmp_path / "state"
    proc = start(config)

    def ours(name: str) -> list[dict[str, Any]]:
        return [o for o in _sim_ledger(state) if o["orderRef"].startswith(f"mr-{name}-")]

    wait_until(lambda: ticked(state, "old", proc, tmp_path / "runner.out") and ours("old"), 30)
    config.write_text(config.read_text().replace("name: old", "name: new"))
    reloaded = cli("reload", str(config))
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    [trade] = ours("old")
    assert (f"- old: removed: stopped; on_stop keep: leaves 1 trade(s): trade {trade['tradeID']}"
            in reloaded.stdout), reloaded.stdout  # fmt: skip
    wait_until(lambda: ours("new"), 30)

    closed = cli("close", str(config), "old")  # no --server: the running simulator's
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "closing beside account 'new'" in closed.stderr, closed.stderr
    [after] = ours("old")
    assert after["closed_utc"] and [o["closed_utc"] for o in ours("new")] == [None]  # ledger
    row = _journal_row(state, "old", trade["orderRef"])
    assert row.price_source == "history" and row.realized_pl == after["realized_pl"], row
    shown = read_worker_status(StateDir(state).account("old"))  # what status merges in
    assert shown["positions"] == [] and shown["open_trades"] == 0, shown  # not shown any more

    config.write_text(config.read_text().replace("state_dir: state", "state_dir: state2"))
    refused = cli("reload", str(config))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout.startswith("! state_dir: ") and "cannot apply live" in refused.stdout
    config.write_text(config.read_text().replace("state_dir: state2", "state_dir: state"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = config.read_text().replace("accounts:", f"metrics:\n  listen: 127.0.0.1:{port}\n"
                                          "accounts:", 1)  # fmt: skip
        config.write_text(text)
        started = cli("start", str(config))
    out = started.stdout + started.stderr
    assert started.returncode == 1, out
    last = started.stdout.strip().splitlines()[-1]
    assert last.endswith(f"the metrics server exited before it was ready: cannot "
                         f"serve /metrics on 127.0.0.1:{port}: [Errno 98] Address already "
                         "in use"), out  # fmt: skip
    assert "simulator exited unexpectedly" not in out and "still running" not in out, out
