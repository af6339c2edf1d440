"""A stop applies ``on_stop`` however the worker went, or names what it left open.

Real processes: the supervisor (``launch.start``, in a subprocess), its workers and
sweeps, against the simulator; the simulator's ledger is the judge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from tests.conftest import wait_until
from tests.supervisor.test_start_stop import cli

ROOT = Path(__file__).resolve().parents[2]
NAME = "coin-a"
PREFIX = f"mr-{NAME}-"

CONFIG = """\
version: 1
server: {server}
state_dir: {state}
stop_timeout: {stop_timeout}
accounts:
  - name: {name}
    user: alice
    api_key: alice-key-1234
    accountid: ACC-1
    runmode: livetest
    strategy: strats:buy
    instrument: BTCUSD
    volume: 1
    interval: 1s
    on_stop: close
"""

# Long with one trade; the test makes it crash, or hang ignoring SIGTERM, by a file.
STRATEGY = """\
import os, signal, time
from pathlib import Path

HERE = Path(__file__).parent


def buy(ctx):
    if (HERE / "crash").exists():
        os._exit(3)
    if (HERE / "hang").exists():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (HERE / "hanging").touch()
        while True:
            time.sleep(0.05)
    return "BUY"
"""

# The supervisor as `multirun start` runs it, with test-sized restart and watchdog timing.
SCRIPT = """\
import dataclasses, json, sys
from multirun.config import loader as config
from multirun.supervisor import launch
from multirun.supervisor import watchdog
from multirun.supervisor.program import RestartPolicy

options = json.loads(sys.argv[2])
runner = config.load(sys.argv[1])
if "watchdog_timeout_s" in options:
    runner = dataclasses.replace(runner, watchdog_timeout_s=options["watchdog_timeout_s"])
if "kill_after_s" in options:
    watchdog.KILL_AFTER_S = options["kill_after_s"]
sys.exit(launch.start(runner, policy=RestartPolicy(**options.get("policy", {}))))
"""

BACKOFF_60 = {"startsecs": 0.5, "backoff_base_s": 60.0, "backoff_cap_s": 60.0}


def write_config(tmp_path: Path, server: str, *, stop_timeout: float = 10) -> Path:
    (tmp_path / "strats.py").write_text(STRATEGY)
    path = tmp_path / "runner.yaml"
    path.write_text(
        CONFIG.format(server=server, state=tmp_path / "state", stop_timeout=stop_timeout,
                      name=NAME)
    )  # fmt: skip
    return path


class Supervisor:
    def __init__(self, tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
        self.tmp_path, self.proc = tmp_path, proc
        self.layout = StateDir(tmp_path / "state")

    def output(self) -> str:
        return (self.tmp_path / "out.log").read_text(errors="replace")

    def account(self) -> dict[str, Any]:
        data = procutil.read_json(self.layout.supervisor_json) or {}
        entry = data.get("accounts", {}).get(NAME, {})
        return entry if isinstance(entry, dict) else {}

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(self.output())
        return True

    def wait_state(self, state: str, timeout: float) -> dict[str, Any]:
        return wait_until(lambda: self.alive() and self.account().get("state") == state
                          and self.account(), timeout)  # fmt: skip


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Supervisor] = []

    def run(config: Path, **options: Any) -> Supervisor:
        with (tmp_path / "out.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", SCRIPT, str(config), json.dumps(options)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        started.append(Supervisor(tmp_path, proc))
        return started[-1]

    yield run
    for sup in started:
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait()


def ours_open(sim: SimServer) -> list[dict[str, Any]]:
    return [o for o in sim.ledger() if o["orderRef"].startswith(PREFIX) and o["status"] == "OPEN"]


def holding(sim: SimServer, sup: Supervisor) -> dict[str, Any]:
    """The one trade the account holds, once the worker opened it."""
    found = wait_until(lambda: sup.alive() and ours_open(sim), 30)
    assert len(found) == 1
    return dict(found[0])


@pytest.mark.process
def test_a_stop_during_backoff_closes_the_journaled_trade(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    sup = start(write_config(tmp_path, sim.base_url), policy=BACKOFF_60)
    trade = holding(sim, sup)
    (tmp_path / "crash").touch()
    sup.wait_state("BACKOFF", 15)
    assert [o["tradeID"] for o in ours_open(sim)] == [trade["tradeID"]]  # the crash left it
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=30) == 0, sup.output()
    assert ours_open(sim) == []
    out = sup.output()
    assert f"{NAME}: its journal holds 1 trade(s); applying on_stop (close)" in out
    assert f"{NAME}: sweep done: nothing of ours held" in out
    final = procutil.read_json(sup.layout.supervisor_json)["final_lines"]
    assert final == [f"1 account(s) needed a sweep: {NAME} (its worker: exit 3)",
                     "stopped; every account flat"]  # fmt: skip


@pytest.mark.process
def test_a_worker_killed_at_stop_timeout_has_its_trades_closed_by_a_sweep(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    sup = start(write_config(tmp_path, sim.base_url, stop_timeout=2))
    holding(sim, sup)
    (tmp_path / "hang").touch()
    wait_until(lambda: sup.alive() and (tmp_path / "hanging").exists(), 10)
    stopped = cli("stop", str(tmp_path / "runner.yaml"))
    code = sup.proc.wait(timeout=30)
    out = sup.output()
    assert f"stop_timeout (2 s) passed for {NAME}: SIGKILL to {NAME}" in out
    assert ours_open(sim) == [], out  # the sweep closed it
    assert f"{NAME}: sweep done: nothing of ours held" in out
    # The end state decides: the worker had to be killed, its sweep left nothing held.
    assert code == 0 and stopped.returncode == 0, stopped.stdout + stopped.stderr
    final = [f"1 account(s) needed a sweep: {NAME} (killed at stop_timeout (2 s))",
             "stopped; every account flat"]  # fmt: skip
    assert stopped.stdout.splitlines()[1:] == final
    assert out.splitlines()[-1].endswith("supervisor | stopped; every account flat")


@pytest.mark.process
def test_a_stopped_worker_is_overdue_then_killed_and_restarted_adopting_its_trade(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    config = write_config(tmp_path, sim.base_url)
    policy = {"startsecs": 0.5, "backoff_base_s": 0.2}
    sup = start(config, policy=policy, watchdog_timeout_s=2, kill_after_s=2)
    trade = holding(sim, sup)
    pid = sup.wait_state("RUNNING", 10)["pid"]
    wait_until(lambda: sup.layout.account(NAME).heartbeat.exists(), 10)
    os.kill(pid, signal.SIGSTOP)
    try:
        late = sup.wait_state("OVERDUE", 10)
        assert late["pid"] == pid and "no heartbeat" in late["note"]
        shown = cli("status", str(config))
        # 3: an account is not RUNNING (supervisorctl's convention)
        assert shown.returncode == 3 and f"{NAME}" in shown.stdout and "OVERDUE" in shown.stdout
        again = wait_until(lambda: sup.alive() and sup.account().get("restarts") == 1
                           and sup.account(), 15)  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert again["last_exit"].startswith("signal SIGKILL (watchdog: no heartbeat")
    status_file = sup.layout.account(NAME).status
    wait_until(lambda: sup.alive() and (procutil.read_json(status_file) or {}).get("pid")
               not in (None, pid) and (procutil.read_json(status_file) or {}).get("ticks"),
               15)  # fmt: skip
    # Adopted: the same trade, still open, not doubled.
    assert [o["tradeID"] for o in ours_open(sim)] == [trade["tradeID"]]
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=30) == 0, sup.output()
    assert ours_open(sim) == []


@pytest.mark.process
def test_a_server_refusing_every_close_leaves_the_trade_named_and_exit_status_1(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    config = write_config(tmp_path, sim.base_url, stop_timeout=2)
    sup = start(config)
    trade = holding(sim, sup)
    sim.set_faults(error_rate=1.0, endpoints=["close_orders"])
    stopped = cli("stop", str(config))
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert sup.proc.wait(timeout=5) == 1
    left = ours_open(sim)
    assert [o["tradeID"] for o in left] == [trade["tradeID"]]
    line = (
        f"{NAME}: LEFT OPEN: trade {trade['tradeID']} BUY 1 BTCUSD (orderRef {trade['orderRef']})"
    )
    # (", close sent but not confirmed" may follow: it was journaled CLOSING)
    assert [x for x in stopped.stdout.splitlines() if x.startswith(line)]
    last = "stopped; exit status 1: 1 trade(s) left open (listed above)"
    assert stopped.stdout.strip().endswith(last)
    assert line in sup.output() and "every account flat" not in sup.output()
    assert line in cli("status", str(config)).stdout
