"""``multirun stop`` waits for the supervisor's own deadline and prints its final lines.

A stand-in supervisor (a small process writing ``supervisor.json`` as the arbiter does)
plays each timing: a deadline recorded at the signal, one that moves later, an exit with
no final report, one that never comes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.ops import status
from multirun.ops import stop as stopping

LEFT = "coin-a: LEFT OPEN: trade 7 BUY 1 BTCUSD (orderRef mr-coin-a-1)"
FINAL = [LEFT, "1 account(s) needed a sweep: coin-a (killed at stop_timeout (30 s))",
         "stopped; exit status 1: 1 trade(s) left open (listed above)"]  # fmt: skip

# The stand-in: on SIGTERM it records each planned deadline (seconds from now) at its
# time after the signal, then exits at ``exit_at``, with its final report if ``final``.
SUPERVISOR = """\
import json, os, signal, sys, time
from datetime import UTC, datetime

path, plan = sys.argv[1], json.loads(sys.argv[2])
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(time.time()))


def write(**fields):
    data = {"pid": os.getpid(), "stop_timeout_s": 30.0, "stopping": bool(got), **fields}
    with open(path + ".tmp", "w") as out:
        json.dump(data, out)
    os.replace(path + ".tmp", path)


write(stop_deadline_utc=None)
print("ready", flush=True)
while not got:
    time.sleep(0.01)
for at, deadline_in in plan["deadlines"]:
    time.sleep(max(0.0, got[0] + at - time.time()))
    deadline = datetime.fromtimestamp(time.time() + deadline_in, UTC).isoformat()
    write(stop_deadline_utc=deadline)
time.sleep(max(0.0, got[0] + plan["exit_at"] - time.time()))
if plan.get("final"):
    write(stop_deadline_utc=None, exit_code=1, final_lines=plan["final"], stopping=False)
"""


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def run(**plan: Any) -> subprocess.Popen[str]:
        path = StateDir(tmp_path).supervisor_json
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(path), json.dumps(plan)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        monkeypatch.setattr(status, "supervisor_pid", lambda state_dir: proc.pid)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.mark.process
def test_stop_waits_past_stop_timeout_for_the_supervisors_deadline_and_prints_its_lines(
    supervisor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scaled down: stop_timeout 30 plus a margin of 0.3 s would have given up at 30.3 s
    # (the old wait); the supervisor's own deadline is 60 s past the signal, and it exits
    # at 1.5 s naming a trade left open: stop waits for it, and prints what it says.
    monkeypatch.setattr(stopping, "STOP_MARGIN_S", 0.3)
    proc = supervisor(deadlines=[[0.0, 60.0]], exit_at=1.5, final=FINAL)
    lines: list[str] = []
    began = time.monotonic()
    assert stopping.stop(tmp_path, echo=lines.append) == 1
    assert 1.4 <= time.monotonic() - began < 10
    assert lines == [f"stopping the supervisor (pid {proc.pid}); waiting up to 61 s", *FINAL]


@pytest.mark.process
def test_stop_follows_a_deadline_that_moves_later(
    supervisor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stopping, "STOP_MARGIN_S", 0.3)
    # 1 s at first; at 0.5 s, 2.5 s more (a sweep started late): it exits at 2 s.
    proc = supervisor(deadlines=[[0.0, 1.0], [0.5, 2.5]], exit_at=2.0, final=FINAL)
    lines: list[str] = []
    assert stopping.stop(tmp_path, echo=lines.append) == 1
    assert lines[0] == f"stopping the supervisor (pid {proc.pid}); waiting up to 2 s"
    assert lines[1].startswith("its stop deadline moved: waiting up to ")
    assert lines[2:] == FINAL


@pytest.mark.process
def test_a_supervisor_past_its_own_deadline_is_reported_not_waited_for_forever(
    supervisor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stopping, "STOP_MARGIN_S", 0.3)
    supervisor(deadlines=[[0.0, 0.5]], exit_at=3600)
    with pytest.raises(SupervisorError, match=r"still running 0\.3 s past its own stop deadline"):
        stopping.stop(tmp_path, echo=lambda line: None)


@pytest.mark.process
def test_a_supervisor_that_exits_without_its_final_report_is_no_calm(
    supervisor: Any, tmp_path: Path
) -> None:
    proc = supervisor(deadlines=[[0.0, 5.0]], exit_at=0.2)
    lines: list[str] = []
    assert stopping.stop(tmp_path, echo=lines.append) == 1
    assert lines[-1] == (
        f"the supervisor (pid {proc.pid}) exited without its final report: what the "
        "accounts hold is unknown (`multirun status` shows what each one said last)"
    )


@pytest.mark.process
def test_an_explicit_timeout_is_kept(supervisor: Any, tmp_path: Path) -> None:
    proc = supervisor(deadlines=[[0.0, 60.0]], exit_at=3600)
    lines: list[str] = []
    with pytest.raises(SupervisorError, match=r"still running after 0\.5 s"):
        stopping.stop(tmp_path, timeout_s=0.5, echo=lines.append)
    assert lines == [f"stopping the supervisor (pid {proc.pid}); waiting up to 0.5 s"]


def test_the_worst_case_by_stop_timeout_alone() -> None:
    # stop_timeout for the worker, the same for its sweep and 10 s of grace, 5 s for the
    # services: 30 -> 75 s (the 60 s `stop` used to wait was short of it)
    assert stopping.worst_case_s(30.0) == 75.0
