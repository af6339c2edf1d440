"""A stop applies on_stop or names what it left open: real workers, the ledger as the judge.

Issue 15: a stop during start-up reconciliation (case 2), on_stop close under failing
reads (case 3), a hanging strategy (case 5), a status file that cannot be written
(case 7), and the sweep that closes a journal's trades without strategy code (2d).
Issue 23, case 10: a damaged journal is set aside and its trades rebuilt from the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from multirun.account.journal import set_aside
from multirun.account.journal.store import Journal
from multirun.core.statedir import AccountDir, StateDir
from multirun.sim import SimServer
from tests.account.test_process import ROOT, bench, run_cli
from tests.conftest import SimCaller, wait_until

NAME, PREFIX = bench.NAME, bench.PREFIX


def config(
    tmp_path: Path, *, strategy: str = "random", extra: str = "", stop_timeout: float = 10
) -> Path:
    path = bench.write_config(tmp_path)
    text = path.read_text().replace("strategy: random", f"strategy: {strategy}")
    path.write_text(text.replace("stop_timeout: 30", f"stop_timeout: {stop_timeout:g}") + extra)
    return path


def account_dir(tmp_path: Path) -> AccountDir:
    return StateDir(tmp_path / "state").account(NAME)


def ledger_open(sim: SimServer) -> list[dict[str, Any]]:
    """Our trades the simulator's ledger shows OPEN or PENDING."""
    return [
        o
        for o in sim.ledger()
        if str(o["orderRef"]).startswith(PREFIX) and o["status"] in ("OPEN", "PENDING")
    ]


@pytest.fixture
def alice(sim: SimServer) -> SimCaller:
    return SimCaller(sim, user="alice", api_key="alice-key", accountid="ACC-1").login()


def start(tmp_path: Path, cfg: Path, sim: SimServer) -> subprocess.Popen[bytes]:
    return bench.start_worker(cfg, sim.base_url, tmp_path / "worker.log")


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text()


def trading(tmp_path: Path, sim: SimServer) -> subprocess.Popen[bytes]:
    """A worker that has reconciled and holds a trade of ours."""
    proc = start(tmp_path, config(tmp_path), sim)
    bench.wait_ticking(tmp_path, proc)
    wait_until(lambda: ledger_open(sim), timeout=15)
    return proc


def killed_with_a_trade(tmp_path: Path, sim: SimServer) -> list[dict[str, Any]]:
    """Run a worker until it holds a trade, SIGKILL it; the trades it left journaled."""
    proc = trading(tmp_path, sim)
    proc.kill()
    proc.wait(timeout=10)
    left = ledger_open(sim)
    assert left
    return left


def later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


# --- case 2: a stop during start-up reconciliation ---------------------------------


@pytest.mark.process
def test_a_stop_during_reconciliation_finishes_it_then_closes(
    sim: SimServer, tmp_path: Path
) -> None:
    killed_with_a_trade(tmp_path, sim)
    sim.set_faults(error_rate=1.0)  # reconciliation retries and retries
    proc = start(tmp_path, config(tmp_path), sim)
    try:
        wait_until(lambda: "retrying in" in log_text(tmp_path), 15)
        proc.send_signal(signal.SIGTERM)
        later(1.0, lambda: sim.set_faults(error_rate=0.0))  # the server recovers
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
        sim.set_faults(error_rate=0.0)
    assert code == 0, log_text(tmp_path)
    assert ledger_open(sim) == []
    assert "stopped before the first tick" not in log_text(tmp_path)


@pytest.mark.process
def test_a_stop_during_reconciliation_past_the_deadline_names_the_trades(
    sim: SimServer, tmp_path: Path
) -> None:
    left = killed_with_a_trade(tmp_path, sim)
    sim.set_faults(error_rate=1.0)  # and it never recovers
    # The deadline's length is not what is checked: 3 s instead of 10 gives up sooner.
    proc = start(tmp_path, config(tmp_path, stop_timeout=3).parent / "runner.yaml", sim)
    try:
        wait_until(lambda: "retrying in" in log_text(tmp_path), 15)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)  # stop_timeout 3 s: done by 80% of it
    finally:
        proc.kill()
        sim.set_faults(error_rate=0.0)
    last = log_text(tmp_path).strip().splitlines()[-1]
    assert code == 3
    assert last.startswith(f"multirun: error: {NAME}: {len(left)} trade(s) left open: ")
    for trade in left:
        # Named by its orderRef always; by its trade id too once the ack was journaled
        # (the SIGKILL may land between the server's execution and the ack's journaling).
        assert trade["orderRef"] in last


# --- case 3: on_stop close retries every retryable failure --------------------------


@pytest.mark.process
def test_on_stop_close_survives_failing_reads_and_revoked_tokens(
    sim: SimServer, tmp_path: Path
) -> None:
    proc = trading(tmp_path, sim)
    try:
        # Every token revoked for a while: the client's one renewal is refused too, so
        # the first attempts fail for certain and on_stop must try again to succeed.
        sim.set_faults(revoke_rate=1.0)
        proc.send_signal(signal.SIGTERM)
        later(3.0, lambda: sim.set_faults(revoke_rate=0.0, error_rate=0.0))
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
        sim.set_faults(revoke_rate=0.0, error_rate=0.0)
    assert code == 0, log_text(tmp_path)
    assert ledger_open(sim) == []
    assert "trying again" in log_text(tmp_path)


# --- case 5: a hanging strategy -------------------------------------------------------

HANG = """\
import time

calls = []


def on_tick(ctx):
    calls.append(1)
    if len(calls) == 1:
        wait_forever()
    return "BUY"


def wait_forever():
    while True:
        time.sleep(3600)
"""


@pytest.mark.process
def test_a_hanging_strategy_is_interrupted_at_tick_timeout_and_ticking_goes_on(
    sim: SimServer, tmp_path: Path
) -> None:
    (tmp_path / "hang.py").write_text(HANG)
    cfg = config(tmp_path, strategy="hang:on_tick")
    cfg.write_text(cfg.read_text().replace("on_stop: close", "on_stop: close\n    tick_timeout: 2"))
    proc = start(tmp_path, cfg, sim)
    try:
        wait_until(lambda: ledger_open(sim), timeout=15)  # ticking went on after the hang
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
    text = log_text(tmp_path)
    assert code == 0, text
    assert "on_tick ran past tick_timeout (2 s)" in text
    stack = next(line for line in text.splitlines() if "strategy stack" in line)
    assert "hang.py" in stack and "in wait_forever" in stack and "worker.py" not in stack
    assert "Traceback" not in text
    assert ledger_open(sim) == []


# --- case 7: a status file that cannot be written -----------------------------------


@pytest.mark.process
def test_a_status_file_that_cannot_be_written_does_not_stop_a_close(
    sim: SimServer, tmp_path: Path
) -> None:
    proc = trading(tmp_path, sim)
    status = account_dir(tmp_path).status
    try:
        status.unlink()
        status.mkdir()  # os.replace onto a non-empty directory fails, even for root
        (status / "in-the-way").write_text("")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
    text = log_text(tmp_path)
    assert code == 0, text
    assert ledger_open(sim) == []
    assert text.count("cannot write") == 1 and "Traceback" not in text
    assert [p.name for p in status.parent.iterdir() if p.name.endswith(".tmp")] == []


# --- interface 2d: the sweep ------------------------------------------------------------


BROKEN = "raise ImportError('this strategy is broken now')\n"


def sweep(cfg: Path, server_url: str, deadline_s: float) -> subprocess.CompletedProcess[str]:
    """run_sweep in a fresh process, as the supervisor forks it: with the spec loaded (the
    strategy was fine then), its strategy module broken since; it must import none."""
    module = cfg.parent / "fine.py"
    code = f"""
import sys
from pathlib import Path
from multirun.config import loader as config
from multirun.account import process as account_process
runner = config.load(Path({str(cfg)!r}), environ={{}})
sys.modules.pop("fine", None)
Path({str(module)!r}).write_text({BROKEN!r})
url = {server_url!r}
code = account_process.run_sweep(runner, {NAME!r}, server_url=url, deadline_s={deadline_s})
assert "fine" not in sys.modules
sys.exit(code)
"""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def with_a_trade_journaled(tmp_path: Path, sim: SimServer) -> Path:
    (tmp_path / "fine.py").write_text("def on_tick(ctx):\n    return 'BUY'\n")
    cfg = config(tmp_path, strategy="fine:on_tick")
    proc = start(tmp_path, cfg, sim)
    try:
        wait_until(lambda: ledger_open(sim) and journal_held(tmp_path), timeout=15)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return cfg


def journal_held(tmp_path: Path) -> list[str]:
    """The trade ids the journal holds (read without the worker's lock)."""
    journal = Journal(account_dir(tmp_path).journal, PREFIX)
    try:
        return [row.trade_id or "" for row in journal.held()]
    finally:
        journal.close()


@pytest.mark.process
def test_a_sweep_closes_the_journals_trades_without_loading_the_strategy(
    sim: SimServer, tmp_path: Path
) -> None:
    cfg = with_a_trade_journaled(tmp_path, sim)
    result = sweep(cfg, sim.base_url, 10)
    assert result.returncode == 0, result.stderr
    assert ledger_open(sim) == []
    journal = Journal(account_dir(tmp_path).journal, PREFIX)
    try:
        assert journal.held() == [] and journal.intents() == []
    finally:
        journal.close()


@pytest.mark.process
def test_a_sweep_that_cannot_close_names_every_trade_left_open(
    sim: SimServer, tmp_path: Path
) -> None:
    cfg = with_a_trade_journaled(tmp_path, sim)
    left = ledger_open(sim)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused
    result = sweep(cfg, f"http://127.0.0.1:{port}/rest/v1", 2)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 3
    assert last.startswith(f"multirun: error: {NAME}: {len(left)} trade(s) left open: ")
    for trade in left:
        assert str(trade["tradeID"]) in last and trade["orderRef"] in last
    assert "Traceback" not in result.stderr


@pytest.mark.process
def test_a_sweep_shares_the_users_session_token(sim: SimServer, tmp_path: Path) -> None:
    """Under one token per user, a sweep that fetched its own token would revoke the one
    the user's other accounts hold: it takes the shared one from the state dir instead."""
    cfg = with_a_trade_journaled(tmp_path, sim)
    sim.set_faults(one_token_per_user=True)
    issued = sim.stats()["tokens_issued"]
    result = sweep(cfg, sim.base_url, 10)
    assert result.returncode == 0, result.stderr
    assert ledger_open(sim) == []
    assert sim.stats()["tokens_issued"] == issued
    assert sim.stats()["tokens_replaced"] == 0


# --- issue 23, case 10: a damaged journal hides no open trade ------------------------

IDLE = "def on_tick(ctx):\n    return None\n"


def damaged_journal_holding_a_trade(tmp_path: Path, alice: SimCaller) -> str:
    """A journal that recorded one trade open on the server (as ``on_stop: keep`` leaves
    it), checkpointed, then truncated to half its size: SQLite calls it malformed."""
    path = account_dir(tmp_path).journal
    journal = Journal(path, PREFIX)
    try:
        row = journal.new_intent("BTCUSD", "BUY", 1.0)
        trade_id = alice.open(orderRef=row.order_ref)
        journal.mark_acked(row.order_ref, trade_id)
        for n in range(300):  # pages enough that half the file loses the trade's
            journal.add_equity(float(n), 1000.0, 0.0, 0.0)
    finally:
        journal.close()  # the last connection: checkpointed into journal.sqlite
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "is damaged" in (set_aside.examine(path, NAME) or "")
    return trade_id


def kept_aside(tmp_path: Path) -> list[Path]:
    return sorted(account_dir(tmp_path).path.glob("journal.corrupt-*.sqlite"))


@pytest.mark.process
@pytest.mark.slow
def test_a_damaged_journal_is_set_aside_and_its_trade_closed_by_on_stop(
    sim: SimServer, tmp_path: Path, alice: SimCaller
) -> None:
    trade_id = damaged_journal_holding_a_trade(tmp_path, alice)
    (tmp_path / "idle.py").write_text(IDLE)
    proc = start(tmp_path, config(tmp_path, strategy="idle:on_tick"), sim)
    try:
        status = bench.wait_ticking(tmp_path, proc)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
    assert code == 0, log_text(tmp_path)
    assert ledger_open(sim) == []
    assert alice.ledger_entry(trade_id)["status"] == "CLOSED"
    (kept,) = kept_aside(tmp_path)
    assert kept.stat().st_mode & 0o777 == 0o600
    assert f"set aside as {kept}" in log_text(tmp_path)
    assert str(kept) in status["journal_rebuilt"]
    assert "journal rebuilt from the server" in status["journal_rebuilt"]


@pytest.mark.process
def test_multirun_close_on_a_garbage_journal_closes_the_servers_trade(
    sim: SimServer, tmp_path: Path, alice: SimCaller
) -> None:
    cfg = config(tmp_path)
    trade_id = alice.open(orderRef=f"{PREFIX}ABCDEFGH-1")
    path = account_dir(tmp_path).journal
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database " * 1000)
    result = run_cli("close", str(cfg), NAME, "--server", sim.base_url, "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert alice.ledger_entry(trade_id)["status"] == "CLOSED"
    (kept,) = kept_aside(tmp_path)
    assert kept.read_bytes().startswith(b"not a database")
    assert f"set aside as {kept}" in result.stderr
    assert "journal rebuilt from the server" in (set_aside.examine(path, NAME) or "")
