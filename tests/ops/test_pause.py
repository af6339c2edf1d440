"""Pause, resume, flatten and the file-level money limit: real supervisor, real workers, the
real simulator (its ledger is the judge of what was closed). One scenario, to keep the
processes few:

1. two accounts each buy and hold 1 BTCUSD: each is down by about the spread (36), under
   the file's max_daily_loss of 50; together they are over it: the supervisor flattens
   both (on_breach: flatten; one log line naming the sum and the limit): nothing of
   theirs open in the ledger, each trade closed once, both PAUSED;
2. a SIGKILLed worker comes back PAUSED (its journal), and so does every worker under a
   restarted supervisor whose file no longer has any limit;
3. resume by command (the account buys again), flatten --all: nothing of ours open in the
   ledger, and the reply names exactly the trade the ledger closed; pause by command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RISK = "risk:\n  max_daily_loss: 50\n  on_breach: flatten\n"
ACCOUNT = """\
  - name: {name}
    user: alice
    api_key: pause-key-123456
    accountid: ACC-{name}
    runmode: livetest
    strategy: {module}:hold
    instrument: BTCUSD
    volume: 1
    interval: 1s
    on_stop: keep
"""


class Fleet:
    """One supervisor (started again as asked) on the test's simulator."""

    def __init__(self, tmp: Path, sim: SimServer) -> None:
        self.tmp, self.sim = tmp, sim
        self.state = tmp / "state"
        module = f"pause_hold_{os.getpid()}_{time.monotonic_ns()}"
        (tmp / f"{module}.py").write_text("def hold(ctx):\n    return 'BUY'\n")
        head = f"version: 1\nserver: {sim.base_url}\nstate_dir: {self.state}\nstop_timeout: 20\n"
        accounts = "".join(ACCOUNT.format(name=n, module=module) for n in ("pa", "pb"))
        self.config = tmp / "runner.yaml"
        self.config.write_text(head + RISK + "accounts:\n" + accounts)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.tmp / "out.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from multirun.cli.app import main; main()",
                 "start", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=ENV,
            )  # fmt: skip

    def out(self) -> str:
        return (self.tmp / "out.log").read_text()

    def entry(self, name: str) -> dict[str, Any]:
        data = procutil.read_json(StateDir(self.state).supervisor_json) or {}
        return dict((data.get("accounts") or {}).get(name) or {})

    def paused(self, name: str, prefix: str) -> bool:
        entry = self.entry(name)
        reason = entry.get("worker_reason") or ""
        return entry.get("worker_state") == "PAUSED" and reason.startswith(prefix)

    def day_pnl(self, name: str) -> float:
        status = procutil.read_json(StateDir(self.state).account(name).status) or {}
        return float(status["day_pnl"])

    def orders(self, name: str) -> list[dict[str, Any]]:
        return [o for o in self.sim.ledger() if str(o["orderRef"]).startswith(f"mr-{name}-")]

    def held(self, name: str) -> list[str]:
        return [str(o["tradeID"]) for o in self.orders(name) if o["status"] in ("OPEN", "PENDING")]

    def request(self, payload: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(StateDir(self.state).control_socket))
            sock.sendall(json.dumps({"v": 1, **payload}).encode() + b"\n")
            return dict(json.loads(sock.makefile("rb").readline()))

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, self.out()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV,
    )  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path, sim: SimServer) -> Iterator[Fleet]:
    made = Fleet(tmp_path, sim)
    yield made
    if made.proc is not None and made.proc.poll() is None:
        made.proc.kill()
        made.proc.wait()


def flat(fleet: Fleet, name: str) -> bool:
    """Flattened for the fleet's breach: PAUSED, its one trade closed in the ledger."""
    orders = fleet.orders(name)
    closed = len(orders) == 1 and orders[0]["status"] == "CLOSED"
    return closed and fleet.paused(name, "fleet daily loss")


@pytest.mark.process
def test_fleet_limit_flatten_persistence_resume_and_flatten(fleet: Fleet) -> None:
    fleet.start()
    wait_until(lambda: flat(fleet, "pa") and flat(fleet, "pb"), 30)
    # each alone is under the limit (down by about the spread); their sum was over it
    assert all(-50 < fleet.day_pnl(n) < 0 for n in ("pa", "pb"))
    breach = [line for line in fleet.out().splitlines() if "risk: fleet daily loss" in line]
    assert len(breach) == 1 and "> 50 (day " in breach[0], fleet.out()
    assert breach[0].endswith(": flatten every account")
    held = {n: [str(o["tradeID"]) for o in fleet.orders(n)] for n in ("pa", "pb")}

    # a SIGKILLed worker comes back paused (its journal)
    old = fleet.entry("pb")["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: fleet.entry("pb").get("pid") not in (None, old), 15)
    wait_until(lambda: fleet.paused("pb", "fleet daily loss"), 15)

    # a restarted supervisor, its file without any limit: every worker starts PAUSED
    fleet.stop()  # on_stop: keep
    fleet.config.write_text(fleet.config.read_text().replace(RISK, ""))
    fleet.start()
    wait_until(lambda: all(fleet.paused(n, "fleet daily loss") for n in ("pa", "pb")), 30)
    assert {n: [str(o["tradeID"]) for o in fleet.orders(n)] for n in ("pa", "pb")} == held

    resumed = fleet.request({"cmd": "resume", "names": ["pa"]})
    assert resumed["ok"] and resumed["lines"] == ["pa: RUNNING"], resumed
    wait_until(lambda: fleet.held("pa"), 10)  # it buys again
    (trade,) = fleet.held("pa")
    done = cli("flatten", str(fleet.config), "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(fleet.held(n) == [] for n in ("pa", "pb"))  # the ledger: nothing of ours open
    (order,) = [o for o in fleet.orders("pa") if str(o["tradeID"]) == trade]
    assert order["status"] == "CLOSED"
    assert done.stdout.splitlines() == [
        f"pa: PAUSED ({fleet.entry('pa')['worker_reason']})",
        f"  closed: trade {trade} BUY 1 BTCUSD (orderRef {order['orderRef']})",
        f"pb: PAUSED ({fleet.entry('pb')['worker_reason']})",
        "  nothing was open",
    ], done.stdout
    assert fleet.paused("pa", "flattened by operator at ")

    paused = fleet.request({"cmd": "pause", "names": ["pa"]})
    assert paused["lines"] == ["pa: PAUSED (paused by operator)"], paused
    unknown = fleet.request({"cmd": "pause", "names": ["nope"]})
    assert unknown["error"] == "pause: no account named nope (accounts: pa, pb)"
    fleet.stop()
