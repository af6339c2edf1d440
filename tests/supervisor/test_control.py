"""The control socket, per-account commands, reload and signals: real supervisor, real
workers, the real simulator (its ledger is the judge of what was closed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from multirun.core import procutil
from multirun.core.clock import parse_iso
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from multirun.supervisor import live_entries
from multirun.supervisor.control_server import PROTOCOL
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
KEY = "ctl-key-123456"
ACCOUNT = """\
  - name: {name}
    user: alice
    api_key: {key}
    accountid: {accountid}
    runmode: livetest
    strategy: random
    params:
      seed: 3
    instrument: BTCUSD
    volume: {volume}
    interval: 1s
    on_stop: close
"""
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def iso(text: str) -> float:
    value = parse_iso(text)
    assert value is not None, text
    return value


def sim_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def write_config(
    path: Path, server: str, state: Path, accounts: dict[str, float], *, extra: str = ""
) -> Path:
    text = f"version: 1\nserver: {server}\nstate_dir: {state}\nstop_timeout: 20\n{extra}"
    text += "accounts:\n"
    for name, volume in accounts.items():
        text += ACCOUNT.format(name=name, key=KEY, accountid=f"ACC-{name}", volume=volume)
    path.write_text(text)
    return path


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV,
    )  # fmt: skip


class Run:
    """One supervisor under test."""

    def __init__(self, tmp: Path, sim: SimServer, accounts: dict[str, float]) -> None:
        self.tmp, self.sim = tmp, sim
        self.state = tmp / "state"
        self.config = write_config(tmp / "runner.yaml", sim.base_url, self.state, accounts)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *prefix: str) -> subprocess.Popen[bytes]:
        with (self.tmp / "out.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-c", "from multirun.cli.app import main; main()",
                 "start", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=ENV,
            )  # fmt: skip
        return self.proc

    def out(self) -> str:
        return (self.tmp / "out.log").read_text()

    def worker(self, name: str) -> dict[str, Any]:
        return procutil.read_json(StateDir(self.state).account(name).status) or {}

    def sup(self) -> dict[str, Any]:
        return procutil.read_json(StateDir(self.state).supervisor_json) or {}

    def pid(self, name: str) -> int | None:
        entry = self.sup().get("accounts", {}).get(name) or {}
        return entry.get("pid") if entry.get("state") == "RUNNING" else None

    def ticking(self, *names: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(self.out())
        return all(self.worker(n).get("ticks", 0) >= 1 and self.pid(n) for n in names)

    def open_trades(self, name: str) -> list[dict[str, Any]]:
        prefix = f"mr-{name}-"
        return [
            o
            for o in self.sim.ledger()
            if o["orderRef"].startswith(prefix) and o["status"] in ("OPEN", "PENDING")
        ]

    def traded(self, name: str) -> bool:
        return any(o["orderRef"].startswith(f"mr-{name}-") for o in self.sim.ledger())

    def request(self, payload: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(StateDir(self.state).control_socket))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            return dict(json.loads(sock.makefile("rb").readline()))


@pytest.fixture
def run(tmp_path: Path, sim: SimServer) -> Iterator[Any]:
    runs: list[Run] = []

    def make(accounts: dict[str, float], tmp: Path = tmp_path) -> Run:
        runs.append(Run(tmp, sim, accounts))
        return runs[-1]

    yield make
    for r in runs:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


@pytest.mark.process
def test_socket_is_owner_only_and_bad_clients_get_one_error_line(run: Any) -> None:
    r = run({"ca": 1})
    r.start()
    wait_until(lambda: r.ticking("ca"), timeout=30)
    path = StateDir(r.state).control_socket
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(path.stat().st_mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(path))  # says nothing: the loop must go on
        ticks = r.worker("ca")["ticks"]
        for bad, words in [
            (b"not json\n", "not a JSON request"),
            (b'{"v": 1, "cmd": "explode"}\n', "unknown command 'explode'"),
            (b'{"v": 99, "cmd": "status"}\n', "protocol version 99"),
            (b"[1]\n", "not a JSON object"),
            (b"x" * 70_000, "request longer than 65536 bytes"),
        ]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(bad)
                reply = json.loads(sock.makefile("rb").readline())
                assert reply["ok"] is False and words in reply["error"], reply
        status = r.request({"v": PROTOCOL, "cmd": "status"}, timeout=5)
        assert status["ok"] and status["accounts"]["ca"]["state"] == "RUNNING"
        assert status["pid"] == r.proc.pid
        wait_until(lambda: r.worker("ca")["ticks"] >= ticks + 2, timeout=5)
    unknown = cli("stop", str(r.config), "nobody", "ca-not")
    assert unknown.returncode == 1
    assert "no account named nobody, ca-not" in unknown.stderr
    assert "Traceback" not in r.out()


@pytest.mark.process
def test_another_uid_cannot_use_the_socket(run: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to try a connect as another uid (setuid in a child)")
    base = Path(tempfile.mkdtemp(prefix="mr-ctl-", dir="/tmp"))
    try:
        base.chmod(0o711)
        r = run({"ca": 1}, tmp=base)
        r.start()
        wait_until(lambda: r.ticking("ca"), timeout=30)
        r.state.chmod(0o711)  # let the other uid reach the socket file
        path = StateDir(r.state).control_socket

        def attempt() -> str:
            child = subprocess.run(
                [sys.executable, "-c", CONNECT_AS_NOBODY, str(path)],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            return child.stdout.strip()

        assert attempt() == "PermissionError"  # 0600: the kernel refuses the connect
        path.chmod(0o666)  # even with the file open to all, the peer's uid is checked
        answer = attempt()
        assert "permission denied: uid 65534" in answer, answer
        assert r.request({"v": PROTOCOL, "cmd": "status"})["ok"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


CONNECT_AS_NOBODY = """
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("PermissionError"); sys.exit(0)
try:
    s.sendall(b'{"v": 1, "cmd": "status"}\\n')
except OSError:
    pass  # refused and closed already: its one line is still to read
print(json.loads(s.makefile("rb").readline())["error"])
"""


@pytest.mark.process
def test_restart_changes_only_that_pid_and_stop_then_start_one(run: Any) -> None:
    r = run({"ca": 1, "cb": 1})
    r.start()
    wait_until(lambda: r.ticking("ca", "cb"), timeout=30)
    before = {n: r.pid(n) for n in ("ca", "cb")}
    entries = live_entries.Entries(StateDir(r.state))  # the notifier's view, kept between asks
    assert entries()["ca"]["pid"] == before["ca"]

    def unchanged_when_nothing_was_saved() -> bool:
        generation = r.request({"v": PROTOCOL, "cmd": "status"})["generation"]
        again = r.request({"v": PROTOCOL, "cmd": "status", "unless": generation})
        said = {"v": PROTOCOL, "ok": True, "generation": generation, "unchanged": True}
        live = {"updated_utc", "risk"}  # what moves with no save (the time, the P&L sums)
        return again.keys() - said.keys() <= live and said.items() <= again.items()

    wait_until(unchanged_when_nothing_was_saved, timeout=10)
    done = cli("restart", str(r.config), "ca")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ca: RUNNING (pid ")
    assert r.pid("ca") not in (None, before["ca"]) and r.pid("cb") == before["cb"]
    assert entries()["ca"]["pid"] == r.pid("ca")  # a save since: the whole reply again

    wait_until(lambda: r.traded("cb"), timeout=10)
    stopped = cli("stop", str(r.config), "cb")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "cb: STOPPED", stopped
    assert r.open_trades("cb") == []  # its on_stop closed them on the server
    assert r.pid("ca") is not None and r.proc.poll() is None
    started = cli("start", str(r.config), "cb")
    assert started.returncode == 0 and started.stdout.startswith("cb: RUNNING"), started
    assert r.sup()["accounts"]["cb"]["restarts"] == 0


@pytest.mark.process
def test_restart_keep_leaves_the_trades_open_for_the_next_process(run: Any) -> None:
    r = run({"ca": 1})
    r.start()
    wait_until(lambda: r.ticking("ca"), timeout=30)
    old = r.pid("ca")
    done = cli("restart", str(r.config), "ca", "--keep")
    assert done.returncode == 0, done.stdout + done.stderr
    assert r.pid("ca") not in (None, old)
    wait_until(lambda: "ca: restart: starting" in r.out(), timeout=5)
    between = r.out().split("ca: restart: stopping (SIGHUP")[1].split("ca: restart: starting")[0]
    assert "trades left open and journaled" in between, between
    assert " closed " not in between and "on_stop" not in between, between  # nothing closed
    assert "sweep" not in r.out()


@pytest.mark.process
def test_reload_adds_removes_changes_and_leaves_the_rest_alone(run: Any) -> None:
    r = run({"keep1": 1, "gone": 1, "vol": 1})
    r.start()
    wait_until(lambda: r.ticking("keep1", "gone", "vol") and r.traded("gone"), timeout=30)
    pids = {n: r.pid(n) for n in ("keep1", "vol")}
    first = r.worker("keep1")

    write_config(r.config, r.sim.base_url, r.state, {"keep1": 1, "vol": 2, "new": 1})
    dry = cli("reload", str(r.config), "--dry-run")
    assert dry.returncode == 0 and "+ new: added: started" in dry.stdout, dry
    gone = next(x for x in dry.stdout.splitlines() if x.startswith("- gone: removed: stopp"))
    assert "holding nothing" in gone or "; on_stop close: closes 1 trade(s): trade " in gone
    assert r.pid("gone") is not None and r.pid("new") is None  # a dry run changes nothing

    done = cli("reload", str(r.config))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "= keep1: unchanged: same process, its positions untouched" in lines, lines
    assert any(x.startswith("+ new: added: ") for x in lines), lines
    assert any(x.startswith("- gone: removed: ") for x in lines), lines
    assert any(line.startswith("~ vol: volume") for line in lines), lines
    assert r.pid("keep1") == pids["keep1"]
    assert r.pid("vol") not in (None, pids["vol"])
    assert r.pid("new") is not None and r.sup()["accounts"]["gone"]["state"] == "STOPPED"
    assert r.open_trades("gone") == []  # removed: its on_stop closed its trades

    last = r.worker("keep1")
    elapsed = iso(last["last_tick_utc"]) - iso(first["last_tick_utc"])
    assert last["pid"] == first["pid"]
    assert last["ticks"] - first["ticks"] == round(elapsed), (first, last)  # none missed


@pytest.mark.process
def test_an_invalid_edit_is_refused_and_changes_nothing(run: Any) -> None:
    r = run({"ca": 1})
    r.start()
    wait_until(lambda: r.ticking("ca"), timeout=30)
    pid = r.pid("ca")
    good = r.config.read_text()
    r.config.write_text(good.replace("volume: 1", "volume: -5"))
    refused = cli("reload", str(r.config))
    expected = cli("validate", str(r.config))
    assert refused.returncode == 1 and expected.returncode == 1
    assert expected.stdout.strip() and expected.stdout.strip() in refused.stderr
    assert r.pid("ca") == pid and r.proc.poll() is None


@pytest.mark.process
def test_two_sigterms_a_millisecond_apart_stop_cleanly(run: Any) -> None:
    r = run({"ca": 1, "cb": 1})
    r.start()
    wait_until(lambda: r.ticking("ca", "cb") and r.open_trades("ca"), timeout=30)
    assert r.proc is not None
    r.proc.send_signal(signal.SIGTERM)
    time.sleep(0.001)  # the scenario itself: GNU timeout or systemd signalling twice
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(timeout=30) == 0, r.out()
    assert r.open_trades("ca") == [] and r.open_trades("cb") == []
    # (the kernel may merge the two into one; the ignored duplicate is logged otherwise)
    assert "SIGKILL to" not in r.out()


@pytest.mark.process
def test_sighup_under_nohup_reloads(run: Any) -> None:
    r = run({"ca": 1})
    r.start("nohup")
    wait_until(lambda: r.ticking("ca"), timeout=30)
    pid = r.pid("ca")
    write_config(r.config, r.sim.base_url, r.state, {"ca": 1, "cb": 1})
    assert r.proc is not None
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: r.ticking("cb"), timeout=20)
    assert r.pid("ca") == pid and r.proc.poll() is None
    wait_until(lambda: "SIGHUP: reload of" in r.out() and "+ cb" in r.out(), timeout=5)


@pytest.mark.process
def test_restart_runs_the_strategy_file_as_edited(run: Any) -> None:
    r = run({"ca": 1})
    module = f"ctl_strategy_{os.getpid()}_{time.monotonic_ns()}"
    source = r.tmp / f"{module}.py"
    source.write_text("def flat(ctx):\n    print('strategy version 1', flush=True)\n")
    text = r.config.read_text().replace("strategy: random", f"strategy: {module}:flat")
    r.config.write_text(text.replace("    params:\n      seed: 3\n", ""))
    r.start()
    wait_until(lambda: r.ticking("ca") and "strategy version 1" in r.out(), timeout=30)
    source.write_text("def flat(ctx):\n    print('strategy version 22', flush=True)\n")
    done = cli("restart", str(r.config), "ca")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: "strategy version 22" in r.out(), timeout=10)


@pytest.mark.process
@pytest.mark.slow
def test_an_accountid_edit_under_held_trades_is_refused_and_the_trades_stay_tracked(
    run: Any,
) -> None:
    """Issue 23 case 1: the new account's listings would 'settle' trades the server keeps
    open on the old one; reload (dry run too) refuses, naming them, and so does a worker."""
    r = run({"ca": 1})
    # a strategy that buys once and holds (random closes and reopens every tick: at a given
    # instant it may hold nothing, and then there is nothing to refuse for)
    module = f"ctl_hold_{os.getpid()}_{time.monotonic_ns()}"
    (r.tmp / f"{module}.py").write_text("def hold(ctx):\n    return 'BUY'\n")
    text = r.config.read_text().replace("on_stop: close", "on_stop: keep")
    text = text.replace("strategy: random", f"strategy: {module}:hold")
    r.config.write_text(text.replace("    params:\n      seed: 3\n", ""))
    r.start()
    wait_until(lambda: r.ticking("ca") and r.open_trades("ca"), timeout=30)
    pid = r.pid("ca")
    r.config.write_text(r.config.read_text().replace("accountid: ACC-ca", "accountid: ACC-new"))

    for extra in (("--dry-run",), ()):
        refused = cli("reload", str(r.config), *extra)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        said = refused.stdout + refused.stderr
        assert "accountid ACC-ca -> ACC-new cannot apply" in said, said
        assert "trade " in said and "mr-ca-" in said, said
    assert r.pid("ca") == pid  # untouched: still trading the old account
    held = {o["orderRef"] for o in r.open_trades("ca")}
    assert held and all(o["status"] == "OPEN" for o in r.open_trades("ca"))

    stopped = cli("stop", str(r.config), "ca")  # on_stop keep: the trades stay journaled
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    worker = cli("run-account", str(r.config), "ca", timeout=30)
    assert worker.returncode == 78, worker.stdout + worker.stderr
    last = worker.stderr.strip().splitlines()[-1]
    assert "accountid ACC-ca -> ACC-new" in last and sorted(held)[0] in last, last
    assert {o["orderRef"] for o in r.open_trades("ca")} == held  # still OPEN on the server
    shown = cli("validate", str(r.config))
    assert "ca" in shown.stdout + shown.stderr and sorted(held)[0] in shown.stdout + shown.stderr
