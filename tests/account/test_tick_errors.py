"""A failed tick you can debug (issue 17, case 12): one line on the terminal, the whole
traceback in worker.log, and ``--log-level debug`` shows the strategy's ctx.log.debug."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from multirun.account import process as account_process
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from multirun.supervisor import output as logs
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = """\
class Broken:
    def on_tick(self, ctx):
        ctx.log.debug("debug line from the strategy")
        return self.decide()

    def decide(self):
        raise ValueError("strategy bug on purpose")
"""


def setup(tmp_path: Path, server: str, module: str) -> Path:
    (tmp_path / f"{module}.py").write_text(STRATEGY, encoding="utf-8")
    path = tmp_path / "runner.yaml"
    path.write_text(
        f"server: {server}\nstate_dir: {tmp_path / 'state'}\nstop_timeout: 10\naccounts:\n"
        f"  - name: alpha\n    user: alice\n    api_key: ${{ONLINE_KEY:-tick-key-123}}\n"
        f"    accountid: A-1\n    runmode: livetest\n    strategy: {module}:Broken\n"
        "    instrument: BTCUSD\n    volume: 0.01\n    interval: 1s\n"
        "    halt_after_failures: 100\n",
        encoding="utf-8",
    )
    return path


def spawn(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    out = (tmp_path / "out.log").open("ab")
    env = {k: v for k, v in os.environ.items() if k != account_process.LOG_LEVEL_ENV}
    return subprocess.Popen(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def finish(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_the_trace_marks_agree() -> None:
    assert logs.TRACE_MARK == account_process.TRACE_MARK


@pytest.mark.process
def test_start_prints_one_line_and_keeps_the_traceback_in_worker_log(
    sim: SimServer, tmp_path: Path
) -> None:
    config = setup(tmp_path, sim.base_url, "h17m_tick_broken_a")
    log = StateDir(tmp_path / "state").account("alpha").log
    proc = spawn(tmp_path, "start", str(config), "--log-level", "debug")
    try:
        wait_until(lambda: log.exists() and "strategy bug on purpose" in log.read_text()
                   and "raise ValueError" in log.read_text(), timeout=20)  # fmt: skip
        # The terminal is written by a thread of its own: wait for its line too.
        wait_until(lambda: "tick failed (1 in a row)" in (tmp_path / "out.log").read_text(),
                   timeout=20)  # fmt: skip
    finally:
        finish(proc)
    text = log.read_text()
    # the account's lines on the terminal (`hh:mm:ss alpha | ...`)
    terminal = "\n".join(
        x for x in (tmp_path / "out.log").read_text().splitlines() if " alpha " in x
    )
    module_file = str(tmp_path / "h17m_tick_broken_a.py")
    assert f'File "{module_file}", line 7, in decide' in text  # the strategy's file and line
    assert "debug line from the strategy" in text and "debug line from the strategy" in terminal
    assert "tick failed (1 in a row): ValueError: strategy bug on purpose" in terminal
    assert "Traceback" not in terminal and "trace| " not in terminal


@pytest.mark.process
def test_run_account_debug_level_and_default_level(sim: SimServer, tmp_path: Path) -> None:
    config = setup(tmp_path, sim.base_url, "h17m_tick_broken_b")
    out = tmp_path / "out.log"
    for args in (("--log-level", "debug"), ()):
        out.write_text("")
        proc = spawn(tmp_path, "run-account", str(config), "alpha", *args)
        try:
            wait_until(lambda: "tick failed (2 in a row)" in out.read_text(), timeout=20)
        finally:
            finish(proc)
        text = out.read_text()
        assert ("debug line from the strategy" in text) == bool(args)
        assert "line 7, in decide" in text  # standalone: stderr is its only log
