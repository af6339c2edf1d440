"""``multirun run-account`` as a real process: signals, errors, SIGKILL and restart."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from multirun.account.journal.store import INTENT, Journal
from multirun.core.errors import EXIT_FATAL
from multirun.core.statedir import AccountDir, StateDir
from multirun.sim import SimServer
from tests.conftest import SimCaller, wait_until

ROOT = Path(__file__).resolve().parents[2]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kill_restart", ROOT / "bench" / "kill_restart.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_bench()
NAME, PREFIX = bench.NAME, bench.PREFIX
# The default run's SIGKILL/restart cycles (seed 11: two kills aimed into a tick, one
# anywhere); the soak run (-m soak) does 12 and must see at least 3 orders.
CYCLES, MIN_ORDERS = 3, 1


def config(tmp_path: Path, **changes: str) -> Path:
    path = bench.write_config(tmp_path)
    text = path.read_text()
    for old, new in changes.items():
        text = text.replace(old, new)
    path.write_text(text)
    return path


def account_dir(tmp_path: Path) -> AccountDir:
    return StateDir(tmp_path / "state").account(NAME)


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def ours_open(alice: SimCaller) -> dict[str, dict[str, Any]]:
    return {t["order_Ref"]: t for t in alice.opened().values() if t["order_Ref"].startswith(PREFIX)}


@pytest.fixture
def alice(sim: SimServer) -> SimCaller:
    return SimCaller(sim, user="alice", api_key="alice-key", accountid="ACC-1").login()


def start(tmp_path: Path, cfg: Path, sim: SimServer) -> subprocess.Popen[bytes]:
    return bench.start_worker(cfg, sim.base_url, tmp_path / "worker.log")


def wait_for_a_trade(tmp_path: Path, proc: subprocess.Popen[bytes], alice: SimCaller) -> None:
    bench.wait_ticking(tmp_path, proc)
    wait_until(lambda: ours_open(alice), timeout=15)


@pytest.mark.process
def test_sigterm_finishes_the_tick_closes_and_exits_0(
    sim: SimServer, alice: SimCaller, tmp_path: Path
) -> None:
    proc = start(tmp_path, config(tmp_path), sim)
    try:
        wait_for_a_trade(tmp_path, proc, alice)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert ours_open(alice) == {}
    status = bench.status(tmp_path)
    assert status["state"] == "STOPPED" and status["open_trades"] == 0
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log and "alice-key" not in log


@pytest.mark.process
def test_sigint_with_keep_leaves_trades_journaled(
    sim: SimServer, alice: SimCaller, tmp_path: Path
) -> None:
    proc = start(tmp_path, config(tmp_path, **{"on_stop: close": "on_stop: keep"}), sim)
    try:
        wait_for_a_trade(tmp_path, proc, alice)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    journal = Journal(account_dir(tmp_path).journal, PREFIX)
    try:
        held = {row.order_ref for row in journal.held()}
    finally:
        journal.close()
    assert held and held == set(ours_open(alice))


@pytest.mark.process
def test_sighup_stops_within_two_seconds_without_closing(
    sim: SimServer, alice: SimCaller, tmp_path: Path
) -> None:
    # A slow server: every call takes 300 ms, so the SIGHUP lands in the middle of a tick.
    proc = start(tmp_path, config(tmp_path), sim)
    try:
        wait_for_a_trade(tmp_path, proc, alice)
        sim.set_faults(latency_ms=300)
        # Each tick now takes over a second; aim the signal 150 ms into the next one.
        time.sleep(math.ceil(time.time()) + 0.15 - time.time())
        began = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(timeout=5)
        elapsed = time.monotonic() - began
    finally:
        proc.kill()
        sim.set_faults(latency_ms=0)
    assert code == 0 and elapsed < 2.0
    assert "SIGHUP" in (tmp_path / "worker.log").read_text()
    # Nothing was closed on the way out: a restart finds every trade of ours journaled.
    journal = Journal(account_dir(tmp_path).journal, PREFIX)
    try:
        held = {row.order_ref for row in journal.held()}
        intents = journal.in_states(INTENT)
    finally:
        journal.close()
    assert set(ours_open(alice)) <= held | {i.order_ref for i in intents}


@pytest.mark.process
def test_sigterm_while_the_server_is_unreachable_stops_at_once(tmp_path: Path) -> None:
    # Start-up reconciliation retries an unreachable server for its whole read budget;
    # a stop request must not wait for it: nothing has been sent in this run.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: connections are refused
    log = tmp_path / "worker.log"
    proc = bench.start_worker(config(tmp_path), f"http://127.0.0.1:{port}/rest/v1", log)
    try:
        wait_until(lambda: "retrying" in log.read_text(), timeout=15)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - began
    finally:
        proc.kill()
    # "At once": far below the read budget it would otherwise wait out (about 20 s); the
    # margin covers the interpreter's own exit on a loaded 2-core machine.
    assert code == 0 and elapsed < 3.0
    assert "stopped before the first tick" in log.read_text()
    assert bench.status(tmp_path)["state"] == "STOPPED"


@pytest.mark.process
def test_an_unknown_account_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = run_cli("run-account", str(config(tmp_path)), "nobody")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no account named 'nobody'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.process
def test_an_invalid_config_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("run-account", str(config(tmp_path, **{"volume: 1": "volume: -1"})), NAME)
    assert result.returncode == 1
    assert result.stderr.startswith("multirun: error:") and "Traceback" not in result.stderr
    missing = run_cli("run-account", str(tmp_path / "nope.yaml"), NAME)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


@pytest.mark.process
def test_a_second_worker_on_the_same_account_is_refused(
    sim: SimServer, alice: SimCaller, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    proc = start(tmp_path, cfg, sim)
    try:
        bench.wait_ticking(tmp_path, proc)
        second = run_cli("run-account", str(cfg), NAME, "--server", sim.base_url)
        # Refused by the host-wide account lock (issue 17 case 1): a deterministic failure.
        assert second.returncode == EXIT_FATAL
        assert "one process per account" in second.stderr and "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def sigkill_and_restart(sim: SimServer, tmp_path: Path, cycles: int, min_orders: int) -> None:
    sim.set_faults(latency_ms=20, jitter_ms=20)  # ticks last longer: more kills mid-request
    result = bench.run_cycles(sim.base_url, sim.ledger, tmp_path, cycles=cycles, seed=11)
    assert result.final_exit == 0
    assert result.duplicated_refs == []
    assert result.left_open == []
    assert result.orders >= min_orders  # it did trade between the kills
    journal = Journal(account_dir(tmp_path).journal, PREFIX)
    try:
        assert journal.held() == [] and journal.intents() == []
        journaled = {row.order_ref for row in journal.all_orders()}
    finally:
        journal.close()
    sent = {o["orderRef"] for o in sim.ledger() if o["orderRef"].startswith(PREFIX)}
    assert sent <= journaled  # every order on the server was journaled before it was sent
    assert json.loads(account_dir(tmp_path).status.read_text())["state"] == "STOPPED"


@pytest.mark.process
def test_sigkill_at_random_instants_then_restart_never_duplicates_or_orphans(
    sim: SimServer, tmp_path: Path
) -> None:
    sigkill_and_restart(sim, tmp_path, cycles=CYCLES, min_orders=MIN_ORDERS)


@pytest.mark.soak
def test_sigkill_at_random_instants_then_restart_soak(sim: SimServer, tmp_path: Path) -> None:
    sigkill_and_restart(sim, tmp_path, cycles=12, min_orders=3)


@pytest.mark.process
def test_sigterm_mid_tick_lets_the_tick_finish(
    sim: SimServer, alice: SimCaller, tmp_path: Path
) -> None:
    proc = start(tmp_path, config(tmp_path), sim)
    try:
        wait_for_a_trade(tmp_path, proc, alice)
        sim.set_faults(latency_ms=150)  # a tick now lasts about a second
        time.sleep(math.ceil(time.time()) + 0.1 - time.time())  # aim into the next tick
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        sim.set_faults(latency_ms=0)
    log = (tmp_path / "worker.log").read_text().splitlines()
    after = log[next(i for i, line in enumerate(log) if "SIGTERM" in line) :]
    assert any("closed" in line for line in after)  # the tick, then on_stop, completed
    journal = Journal(account_dir(tmp_path).journal, PREFIX)
    try:
        assert journal.intents() == [] and journal.held() == []
    finally:
        journal.close()
    assert ours_open(alice) == {}


@pytest.mark.process
def test_server_sim_without_a_server_option_starts_its_own_simulator(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "worker.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from multirun.cli.app import main; main()",
             "run-account", str(cfg), NAME],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        bench.wait_ticking(tmp_path, proc)
        wait_until(lambda: bench.status(tmp_path).get("ticks", 0) >= 1, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert "started an in-process simulator" in (tmp_path / "worker.log").read_text()
    assert bench.status(tmp_path)["open_trades"] == 0


@pytest.mark.process
def test_the_account_process_does_not_import_the_simulator() -> None:
    # Starting an in-process simulator belongs to the command that asks for one.
    code = (
        "import sys, multirun.account.process, multirun.account.worker, "
        "multirun.account.reconcile; "
        "sys.exit('multirun.sim' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.process
def test_an_account_the_server_forbids_is_fatal_at_once(sim_factory: Any, tmp_path: Path) -> None:
    # A 403 ("account not available") is the server's final word: exit 78 (FATAL, never
    # restarted) on the first refusal, its reason in one line, nothing sent.
    alice = {"user": "alice", "api_key": "alice-key", "accounts": {"livetest": ["OTHER"]}}
    sim = sim_factory(accounts={"users": [alice]})
    log = tmp_path / "worker.log"
    proc = bench.start_worker(config(tmp_path), sim.base_url, log)
    try:
        code = proc.wait(timeout=20)
    finally:
        proc.kill()
    last = log.read_text().strip().splitlines()[-1]
    assert code == EXIT_FATAL, log.read_text()
    assert "account ACC-1 is not available in livetest" in last and "HTTP 403" in last
    assert sim.stats()["requests"].get("opened_trades", 0) <= 1  # asked once, not retried
    assert sim.ledger() == []
