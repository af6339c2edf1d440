"""`multirun health`: one line and an exit code from an account's status file."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multirun.cli.app import app
from multirun.config import loader as runner_config
from multirun.config.specs import RunnerSpec
from multirun.core.clock import iso_ms
from multirun.core.procutil import write_json_atomic
from multirun.core.statedir import StateDir
from multirun.ops.health import DEFAULT_GRACE_S, check

NOW = 1_800_000_000.0
INTERVAL = 5
CONFIG = """\
version: 1
server: sim
state_dir: state
defaults:
  user: demo
  api_key: ${MR_HEALTH_UNSET_KEY:?set it}
  runmode: livetest
accounts:
  - name: acct
    accountid: A
    strategy: random
    instrument: BTCUSD
    volume: 0.01
    interval: 5s
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MR_HEALTH_UNSET_KEY", raising=False)  # health needs no credentials
    path = tmp_path / "runner.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def runner(cfg: Path) -> RunnerSpec:
    return runner_config.load_for_control(cfg)


def write_status(runner: RunnerSpec, **fields: Any) -> None:
    status = {
        "name": "acct",
        "pid": os.getpid(),  # stands for the worker: see alive_is_ours
        "state": "RUNNING",
        "started_utc": iso_ms(NOW - 100),
        "last_tick_utc": iso_ms(NOW - 2),
        "interval_s": INTERVAL,
        **fields,
    }
    write_json_atomic(StateDir(runner.state_dir).account("acct").status, status)


@pytest.fixture(autouse=True)
def alive_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process stands for the worker (its argv may not say multirun)."""
    monkeypatch.setattr("multirun.ops.health.looks_like_multirun", lambda pid: pid == os.getpid())


def verdict(runner: RunnerSpec, **options: Any) -> tuple[bool, str]:
    result = check(runner, "acct", now=NOW, **options)
    return result.ok, result.line


def test_ticking_recently_is_ok(runner: RunnerSpec) -> None:
    write_status(runner)
    assert verdict(runner) == (True, "acct: ok: RUNNING, last tick 2 s ago (every 5 s)")


def test_stale_by_more_than_interval_plus_grace(runner: RunnerSpec) -> None:
    age = INTERVAL + DEFAULT_GRACE_S + 1
    write_status(runner, last_tick_utc=iso_ms(NOW - age))
    ok, line = verdict(runner)
    assert not ok and line.startswith("acct: stale by 61 s: last tick 66 s ago")
    assert verdict(runner, grace_s=120)[0]


def test_starting_within_the_grace_then_never_ticked(runner: RunnerSpec) -> None:
    write_status(runner, last_tick_utc=None, started_utc=iso_ms(NOW - 3))
    assert verdict(runner) == (True, "acct: starting: started 3 s ago, no tick yet")
    write_status(runner, last_tick_utc=None, started_utc=iso_ms(NOW - 300))
    assert verdict(runner) == (False, "acct: never ticked: started 300 s ago")


def test_halted_is_not_ready_but_alive(runner: RunnerSpec) -> None:
    write_status(runner, state="HALTED", halted_reason="5 consecutive failed ticks")
    assert verdict(runner) == (False, "acct: HALTED: 5 consecutive failed ticks")
    assert verdict(runner, liveness=True)[0]  # restarting it would lift the halt


def test_stopped_and_gone(runner: RunnerSpec) -> None:
    write_status(runner, state="STOPPED", stop_reason="SIGTERM")
    assert verdict(runner) == (False, "acct: STOPPED: SIGTERM")
    write_status(runner, pid=os.getpid() + 1_000_000)
    ok, line = verdict(runner)
    assert not ok and "not running: pid" in line and "is gone (last state RUNNING)" in line


def test_no_status_file_and_unknown_account(runner: RunnerSpec) -> None:
    ok, line = verdict(runner)
    assert not ok and line.startswith("acct: no status file (") and "has not started" in line
    other = check(runner, "nope", now=NOW)
    assert not other.ok and "no such account" in other.line


def test_cli_exit_codes_without_credentials(runner: RunnerSpec, cfg: Path) -> None:
    cli = CliRunner()
    missing = cli.invoke(app, ["health", str(cfg), "acct"])
    assert missing.exit_code == 1 and "no status file" in missing.output
    write_status(runner, last_tick_utc=iso_ms(time.time()))
    ok = cli.invoke(app, ["health", str(cfg), "acct"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("\n") == 1 and ok.output.startswith("acct: ok: RUNNING")
    too_many = cli.invoke(app, ["health", str(cfg), "acct", "extra"])
    assert too_many.exit_code == 2


def test_cli_config_defaults_to_runner_yaml(
    runner: RunnerSpec, cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cfg.parent)
    write_status(runner, state="HALTED", halted_reason="guardrail")
    result = CliRunner().invoke(app, ["health", "acct"])
    assert result.exit_code == 1 and "HALTED: guardrail" in result.output
    live = CliRunner().invoke(app, ["health", "--liveness", "acct"])
    assert live.exit_code == 0, live.output


def test_paused_is_healthy_and_says_why(runner: RunnerSpec) -> None:
    write_status(runner, state="PAUSED", paused_reason="daily loss 312.40 > 300")
    line = "acct: ok: PAUSED (daily loss 312.40 > 300), last tick 2 s ago (every 5 s)"
    assert verdict(runner) == (True, line)
    assert verdict(runner, liveness=True) == (True, line)
