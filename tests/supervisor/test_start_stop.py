"""``multirun start`` / ``stop`` / ``status`` as real processes with the real worker and sim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.procstat import descendants
from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from tests.conftest import SimCaller, wait_until
from tests.supervisor.test_arbiter import gone

ROOT = Path(__file__).resolve().parents[2]
KEY = "alice-key-1234"
ACCOUNT = """\
  - name: {name}
    user: alice
    api_key: {key}
    accountid: {accountid}
    runmode: {runmode}
    strategy: random
    params:
      seed: 3
    instrument: BTCUSD
    volume: 1
    interval: 1s
    on_stop: close
"""


def write_config(tmp_path: Path, server: str, *, live: bool = False) -> Path:
    text = f"version: 1\nserver: {server}\nstate_dir: {tmp_path / 'state'}\nstop_timeout: 20\n"
    text += "accounts:\n"
    for index, name in enumerate(("coin-a", "coin-b"), start=1):
        runmode = "livetrade" if live and index == 2 else "livetest"
        text += ACCOUNT.format(name=name, key=KEY, accountid=f"ACC-{index}", runmode=runmode)
    path = tmp_path / "runner.yaml"
    path.write_text(text)
    return path


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def run(config: Path, *args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / "out.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from multirun.cli.app import main; main()",
                 "start", str(config), *args],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def worker_status(tmp_path: Path, name: str) -> dict[str, Any]:
    return procutil.read_json(StateDir(tmp_path / "state").account(name).status) or {}


def trading(tmp_path: Path, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError((tmp_path / "out.log").read_text())
    return all(worker_status(tmp_path, n).get("ticks", 0) >= 1 for n in ("coin-a", "coin-b"))


@pytest.mark.process
def test_start_trades_and_stop_from_another_terminal_closes_every_trade(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    config = write_config(tmp_path, sim.base_url)
    proc = start(config)
    wait_until(lambda: trading(tmp_path, proc), timeout=30)
    alice = SimCaller(sim, user="alice", api_key=KEY, accountid="ACC-1").login()
    wait_until(lambda: any(o["orderRef"].startswith("mr-coin-") for o in sim.ledger()), 10)
    sup = StateDir(tmp_path / "state").supervisor_json
    wait_until(  # past startsecs: RUNNING, which status's exit 0 needs
        lambda: (
            {a["state"] for a in (procutil.read_json(sup) or {})["accounts"].values()}
            == {"RUNNING"}
        ),
        timeout=10,
    )

    shown = cli("status", str(config), "--json")
    data = json.loads(shown.stdout)
    assert shown.returncode == data["exit_code"] == 0, shown.stderr  # all RUNNING: ticked
    assert data["supervisor"] == {"pid": proc.pid, "running": True, "config": str(config)}
    assert {a["state"] for a in data["accounts"]} <= {"STARTING", "RUNNING"}
    assert "coin-a" in cli("status", str(config)).stdout

    stopped = cli("stop", str(config))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert proc.wait(timeout=5) == 0
    ours = [o for o in sim.ledger() if o["orderRef"].startswith("mr-coin-")]
    assert ours and not [o for o in ours if o["status"] in ("OPEN", "PENDING")]
    assert not [t for t in alice.opened().values() if t["order_Ref"].startswith("mr-coin-")]

    out = (tmp_path / "out.log").read_text()
    assert " coin-a     | INFO multirun.worker: " in out
    assert out.splitlines()[-1].endswith("supervisor | stopped; every account flat")
    assert stopped.stdout.splitlines()[-1] == "stopped; every account flat"
    worker_log = StateDir(tmp_path / "state").account("coin-a").log
    assert KEY not in out and KEY not in worker_log.read_text()
    after = json.loads(cli("status", str(config), "--json").stdout)
    assert after["supervisor"]["running"] is False
    assert {a["state"] for a in after["accounts"]} == {"STOPPED"}
    assert all(a["open_trades"] == 0 for a in after["accounts"])


@pytest.mark.process
def test_embedded_sim_and_sigkill_of_the_supervisor_leaves_no_process(
    tmp_path: Path, start: Any
) -> None:
    config = write_config(tmp_path, "sim")
    proc = start(config)
    wait_until(lambda: trading(tmp_path, proc), timeout=30)
    children = descendants(proc.pid)
    assert len(children) == 3  # the simulator and two workers
    second = cli("start", str(config))
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"multirun: error: another supervisor (pid {proc.pid}) is running on "
        f"{tmp_path / 'state'}; stop it first with `multirun stop`"
    ]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_until(lambda: all(gone(pid) for pid in children), timeout=2.0)
    assert "STOPPED" in cli("status", str(config)).stdout


@pytest.mark.process
def test_start_refuses_an_invalid_config_with_the_messages_of_validate(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sim")
    config.write_text(config.read_text().replace("volume: 1", "volume: -1", 1))
    started = cli("start", str(config))
    validated = cli("validate", str(config))
    assert started.returncode == validated.returncode == 1
    assert started.stderr.strip() == validated.stdout.strip()
    assert not (tmp_path / "state").exists()


@pytest.mark.process
def test_livetrade_accounts_need_live(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sim", live=True)
    refused = cli("start", str(config))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "multirun: error: livetrade account(s) coin-b trade real money: start with --live, "
        "or leave them out with --only"
    )
    unknown = cli("start", str(config), "--only", "nope")
    assert unknown.returncode == 2 and "--only: no account named nope" in unknown.stderr


UNBUILDABLE = """
import os


class Picky:
    def __init__(self, params):
        # built fine by `start`'s validation (in the supervisor, a child of the test), and
        # refused in the worker (a child of the supervisor): a failure only at run time
        in_worker = os.getppid() != int(os.environ["MR_TEST_PARENT_PID"])
        if params.get("refuse") and in_worker:
            raise ValueError("fast must be below slow")

    def on_tick(self, ctx):
        return "FLAT"
"""


@pytest.mark.process
def test_a_strategy_that_cannot_be_built_at_run_time_is_fatal_after_one_start(
    sim: SimServer, tmp_path: Path, start: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MR_TEST_PARENT_PID", str(os.getpid()))
    module = f"picky_{abs(hash(str(tmp_path))) % 10**9}"
    (tmp_path / f"{module}.py").write_text(UNBUILDABLE)
    text = f"version: 1\nserver: {sim.base_url}\nstate_dir: {tmp_path / 'state'}\naccounts:\n"
    for index, name in enumerate(("bad", "good"), start=1):
        text += ACCOUNT.format(name=name, key=KEY, accountid=f"ACC-{index}", runmode="livetest")
        text = text.replace("strategy: random", f"strategy: {module}:Picky")
        text = text.replace("      seed: 3\n", f"      refuse: {str(name == 'bad').lower()}\n")
    config = tmp_path / "runner.yaml"
    config.write_text(text)
    proc = start(config)
    sup = StateDir(tmp_path / "state").supervisor_json

    def account(name: str) -> dict[str, Any]:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "out.log").read_text())
        return dict((procutil.read_json(sup) or {}).get("accounts", {}).get(name, {}))

    wait_until(lambda: account("bad").get("state") == "FATAL", timeout=30)
    bad = account("bad")
    assert bad["last_exit"] == "exit 78" and bad["restarts"] == 0
    why = "fast must be below slow"
    assert why in bad["last_error"] and why in bad["note"]
    ticks = worker_status(tmp_path, "good").get("ticks", 0)
    wait_until(lambda: worker_status(tmp_path, "good").get("ticks", 0) >= ticks + 2, timeout=15)
    assert account("bad")["state"] == "FATAL" and account("bad")["restarts"] == 0
    out = (tmp_path / "out.log").read_text()
    assert out.count("supervisor | bad: started, pid") == 1, out
    assert "bad: FATAL: " in out and "(exit 78); left stopped" in out
    shown = json.loads(cli("status", str(config), "--json").stdout)
    rows = {a["name"]: a for a in shown["accounts"]}
    assert rows["bad"]["state"] == "FATAL" and why in rows["bad"]["last_error"]
    assert rows["good"]["state"] in ("STARTING", "RUNNING")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1  # a FATAL account is not a clean stop
