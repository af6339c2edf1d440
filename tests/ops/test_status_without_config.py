"""status and stop without the config (issue 11, items 4 and 7): real supervisors, the sim."""

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

from multirun.ops import locate
from multirun.ops.status import collect_at
from multirun.sim import SimServer
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = """
class Flat:
    def __init__(self, params):
        self.explode = params.get("explode")

    def on_tick(self, ctx):
        if self.explode:
            raise RuntimeError("this account cannot tick")
        return "FLAT"
"""


def account(name: str, module: str, explode: bool = False) -> str:
    params = "\n    params:\n      explode: true\n    halt_after_failures: 1" if explode else ""
    return (
        f"  - name: {name}\n    user: alice\n    api_key: alice-key-1234\n"
        f"    accountid: ACC-{name}\n    runmode: livetest\n    strategy: {module}:Flat\n"
        f"    instrument: BTCUSD\n"
        f"    volume: 1\n    interval: 1s{params}\n"
    )


def write(tmp_path: Path, server: str, body: str, *, name: str = "runner.yaml",
          state: str = "state") -> Path:  # fmt: skip
    path = tmp_path / name
    path.write_text(f"version: 1\nserver: {server}\nstate_dir: {state}\nstop_timeout: 10\n"
                    f"accounts:\n{body}")  # fmt: skip
    return path


def module_for(tmp_path: Path) -> str:
    module = f"opsstrat_{abs(hash(str(tmp_path))) % 10**9}"
    (tmp_path / f"{module}.py").write_text(STRATEGY)
    return module


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
    )  # fmt: skip


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def run(config: Path) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{config.stem}.out").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from multirun.cli.app import main; main()", "start",
                 str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ticked(state_dir: Path, name: str, proc: subprocess.Popen[bytes], out: Path) -> bool:
    """The account is RUNNING (past its start-up) and has ticked."""
    if proc.poll() is not None:
        raise AssertionError(out.read_text())
    rows = {r.name: r for r in collect_at(state_dir).accounts}
    row = rows.get(name)
    return row is not None and row.state == "RUNNING" and bool(row.ticks)


@pytest.mark.process
def test_status_and_stop_work_while_the_config_and_a_strategy_are_broken(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    module = module_for(tmp_path)
    config = write(tmp_path, sim.base_url, account("good", module))
    proc = start(config)
    state = tmp_path / "state"
    wait_until(lambda: ticked(state, "good", proc, tmp_path / "runner.out"), timeout=30)
    shown = cli("status", str(config))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"started from {config}" in shown.stdout

    # Mid-edit: a YAML syntax error, an account added, the strategy module broken.
    config.write_text(config.read_text() + account("newbie", module) + "  - name: [oops\n")
    (tmp_path / f"{module}.py").write_text("def broken(:\n")
    shown = cli("status", str(config), "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    data = json.loads(shown.stdout)
    assert data["supervisor"]["running"] and data["supervisor"]["config"] == str(config)
    assert [(a["name"], a["state"]) for a in data["accounts"]] == [("good", "RUNNING")]
    assert data["file_problem"] and data["exit_code"] == 0
    text = cli("status", str(config)).stdout
    assert "does not parse now" in text and "good" in text

    # A parseable edit: an account in the file but not running is shown as such.
    config.write_text(config.read_text().replace("  - name: [oops\n", ""))
    rows = json.loads(cli("status", str(config), "--json").stdout)["accounts"]
    assert [(r["name"], r["state"], r["note"]) for r in rows] == [
        ("good", "RUNNING", None), ("newbie", "STOPPED", "in the file, not running")
    ]  # fmt: skip
    config.write_text(config.read_text() + "  - name: [oops\n")

    stopped = cli("stop", str(config))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert proc.wait(10) == 0
    gone = cli("status", str(config))
    assert gone.returncode == 4 and "not running" in gone.stdout
    assert cli("status", "--state-dir", str(state)).returncode == 4


@pytest.mark.process
def test_status_exits_3_when_an_enabled_account_is_not_running(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    module = module_for(tmp_path)
    body = account("good", module) + account("bad", module, explode=True)
    config = write(tmp_path, sim.base_url, body)
    proc = start(config)
    state = tmp_path / "state"
    wait_until(lambda: ticked(state, "good", proc, tmp_path / "runner.out"), timeout=30)

    def bad_state() -> str:
        rows = {r.name: r for r in collect_at(state).accounts}
        return rows["bad"].state if "bad" in rows else ""

    wait_until(lambda: bad_state() == "HALTED", timeout=20)
    shown = cli("status", str(config))
    assert shown.returncode == 3, shown.stdout + shown.stderr
    # Ctrl-C as at a terminal: where the suite itself runs in a background job, SIGINT
    # arrives ignored (POSIX), and Python then installs no KeyboardInterrupt for it
    terminal = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    watched = subprocess.Popen(
        [sys.executable, "-c", terminal + "from multirun.cli.app import main; main()", "status",
         str(config), "--watch"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert watched.stdout is not None
    seen: list[str] = []  # up to the second table's first line (not a TTY: repeated)
    while sum(line.startswith("supervisor: running") for line in seen) < 2:
        line = watched.stdout.readline()
        assert line and len(seen) < 200, seen  # EOF or no second table: the watch is broken
        seen.append(line)
    assert not any("\033[" in line for line in seen)
    watched.send_signal(signal.SIGINT)
    assert watched.wait(30) == 0  # generous: a loaded machine delays the exit, not the result


@pytest.mark.process
def test_a_second_config_on_the_same_state_dir_is_refused_naming_the_first(
    sim: SimServer, tmp_path: Path, start: Any
) -> None:
    module = module_for(tmp_path)
    first = write(tmp_path, sim.base_url, account("one", module), name="first.yaml")
    proc = start(first)
    wait_until(lambda: ticked(tmp_path / "state", "one", proc, tmp_path / "first.out"), 30)
    second = write(tmp_path, sim.base_url, account("two", module), name="second.yaml")

    refused = cli("start", str(second))
    assert refused.returncode == 1 and str(first) in refused.stderr, refused.stderr
    assert "state_dir" in refused.stderr
    shown = cli("status", str(second))
    assert shown.returncode == 4 and f"runs {first}, not {second}" in shown.stderr
    not_stopped = cli("stop", str(second))
    assert not_stopped.returncode == 1 and f"runs {first}, not {second}" in not_stopped.stderr
    assert proc.poll() is None and locate.running(tmp_path / "state") is not None
    assert cli("status", str(first)).returncode == 0
