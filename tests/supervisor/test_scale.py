"""The supervisor at many accounts: supervisor.json written at a bounded rate, yet current;
a forked child holds none of the arbiter's descriptors (closed in one call, not listed)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from multirun.core import procutil, statefiles
from multirun.core.statedir import StateDir
from multirun.core.states import State
from multirun.supervisor import arbiter as arbiter_module
from multirun.supervisor.arbiter import SAVE_EVERY_S, Arbiter
from multirun.supervisor.fork import ChildContext, Forked
from multirun.supervisor.output import LogRouter
from multirun.supervisor.pipes import Pipes
from multirun.supervisor.program import Proc, Program
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def idle(context: ChildContext) -> int:
    return 0


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every supervisor.json the arbiter writes, in order."""
    written: list[dict[str, Any]] = []
    real = statefiles.write_supervisor

    def spy(layout: StateDir, data: Any, *, compact: bool = True) -> None:
        written.append(json.loads(json.dumps(data)))
        real(layout, data, compact=compact)

    monkeypatch.setattr(arbiter_module.statefiles, "write_supervisor", spy)
    return written


def make_arbiter(tmp_path: Path, accounts: int) -> Arbiter:
    names = [f"a{i:03d}" for i in range(accounts)]
    router = LogRouter.for_accounts(names, tmp_path, [], stream=io.StringIO())
    return Arbiter(
        [Program(n, idle) for n in names], state_dir=tmp_path, router=router, stop_timeout_s=5
    )


def test_many_changes_in_one_turn_are_one_write_of_the_last_state(
    tmp_path: Path, writes: list[dict[str, Any]]
) -> None:
    arb = make_arbiter(tmp_path, 200)
    for proc in arb.procs:  # what a launch does: a change, and a save, per account
        proc.transition(State.STARTING)
        arb.save()
    for proc in arb.procs:
        proc.transition(State.RUNNING)
        arb.save()
    assert writes == []  # nothing written mid-turn
    arb.flush()  # the end of the loop turn
    assert len(writes) == 1
    assert {a["state"] for a in writes[0]["accounts"].values()} == {State.RUNNING}
    on_disk = procutil.read_json(arb.layout.supervisor_json)
    assert on_disk is not None and len(on_disk["accounts"]) == 200
    arb.router.close()


def test_a_change_soon_after_a_write_is_written_within_the_bound(
    tmp_path: Path, writes: list[dict[str, Any]]
) -> None:
    arb = make_arbiter(tmp_path, 3)
    arb.save()
    arb.flush()
    first = arb.procs[0]
    first.note = "changed"
    arb.save()
    arb.flush()  # too soon after the last write: the file waits
    assert len(writes) == 1
    assert 0 < arb.timeout() <= SAVE_EVERY_S  # but the loop wakes for it
    wait_until(lambda: time.monotonic() - arb.saved_at >= SAVE_EVERY_S, 5)
    arb.flush()
    assert len(writes) == 2
    assert writes[-1]["accounts"][first.name]["note"] == "changed"
    arb.flush()  # nothing changed since: no write
    assert len(writes) == 2
    arb.router.close()


def test_save_now_writes_at_once_whatever_the_rate(
    tmp_path: Path, writes: list[dict[str, Any]]
) -> None:
    arb = make_arbiter(tmp_path, 2)
    arb.save(now=True)
    arb.procs[1].transition(State.STARTING)
    arb.save(now=True)  # a control reply follows: the file must already say it
    assert len(writes) == 2
    assert writes[-1]["accounts"]["a001"]["state"] == State.STARTING
    assert not arb.dirty
    arb.router.close()


def test_the_supervisor_json_is_compact_json(tmp_path: Path) -> None:
    arb = make_arbiter(tmp_path, 2)
    arb.save(now=True)
    text = arb.layout.supervisor_json.read_text()
    assert text.count("\n") == 1 and json.loads(text)["accounts"]["a000"]["state"] == "STOPPED"
    assert (arb.layout.supervisor_json.stat().st_mode & 0o777) == 0o600
    arb.router.close()


def test_an_exit_is_found_by_pid_without_scanning(tmp_path: Path) -> None:
    arb = make_arbiter(tmp_path, 2)
    proc: Proc = arb.procs[0]
    proc.pid, proc.state = 4242, State.RUNNING
    arb.by_pid[4242] = proc
    arb.exited(9999, 0)  # not ours: ignored
    assert proc.pid == 4242
    assert 4242 in arb.by_pid
    arb.router.close()


# A probe child forked by the arbiter's fork_child, its output read to the end (the
# script defines main and death_r first).
PROBE_OUTPUT = """
forked = spawn.fork_child("probe", main, death_signal=1, death_r=death_r)
out = b""
while chunk := os.read(forked.stdout, 4096):
    out += chunk
os.waitpid(forked.pid, 0)
"""

CHILD_FDS = (
    """
import os, sys
from multirun.core import procutil
from multirun.supervisor import fork as spawn

extra = os.dup2(os.open(os.devnull, os.O_RDONLY), 57)  # the parent's, listed nowhere
death_r, death_w = procutil.pipe()

def main(ready):
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    print(" ".join(map(str, fds)), death_r, extra, flush=True)
    return 0

"""
    + PROBE_OUTPUT
    + """
sys.stdout.write(out.decode())
"""
)


@pytest.mark.process
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_a_child_holds_only_its_own_descriptors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD_FDS],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    *fds, death_r, extra = (int(x) for x in result.stdout.split())
    # 0-2, the pipe that tells it of the arbiter's death, and the descriptor listdir opened
    assert extra not in fds
    assert death_r in fds
    assert len([fd for fd in fds if fd > 2 and fd != death_r]) <= 1


FROZEN_CHILD = (
    """
import gc, os, sys
from multirun.core import procutil
from multirun.supervisor import fork as spawn

death_r, death_w = procutil.pipe()
made_after_preload = [[i] for i in range(5000)]  # the arbiter's own, tracked by the collector

def main(ready):
    print(gc.get_freeze_count(), flush=True)
    return 0
"""
    + PROBE_OUTPUT
    + """
print(out.decode().strip(), gc.get_freeze_count())
"""
)


@pytest.mark.process
def test_a_child_freezes_what_it_inherits() -> None:
    result = subprocess.run([sys.executable, "-c", FROZEN_CHILD], capture_output=True,
                            text=True, timeout=30, cwd=ROOT, check=True)  # fmt: skip
    child, parent = (int(x) for x in result.stdout.split())
    assert parent == 0  # the arbiter keeps collecting its own garbage
    assert child >= 5000  # the child's collector never walks (and copies) those pages


HELD_CHILD = """
import os, sys
from pathlib import Path
from multirun.core import procutil
from multirun.supervisor import fork as spawn

note = Path(sys.argv[1])
death_r, death_w = procutil.pipe()
hold_r, hold_w = procutil.pipe()

def main(ready):
    print(note.read_text(), flush=True)  # written by the parent after the fork
    return 0

forked = spawn.fork_child("held", main, death_signal=1, death_r=death_r, hold=hold_r)
note.write_text("written before the release")
os.close(hold_w)
os.close(hold_r)
out = b""
while chunk := os.read(forked.stdout, 4096):
    out += chunk
_, status = os.waitpid(forked.pid, 0)
sys.stdout.write(out.decode() + str(os.waitstatus_to_exitcode(status)))
"""


@pytest.mark.process
def test_a_held_child_runs_only_once_the_batch_is_forked(tmp_path: Path) -> None:
    note = tmp_path / "note"
    result = subprocess.run(
        [sys.executable, "-c", HELD_CHILD, str(note)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.split("\n") == ["written before the release", "0"]


def test_lines_that_change_nothing_do_not_end_the_wait_a_condition_does(tmp_path: Path) -> None:
    """Log lines and a P&L under the fleet's limit are routed inside one wait (a turn of
    the loop costs O(accounts)); a worker's new condition ends it at once."""
    arb = make_arbiter(tmp_path, 1)
    proc = arb.procs[0]
    proc.program = Program(proc.name, idle, announces_up=True)
    arb.pipes = Pipes(arb.router)
    out, err, ready = os.pipe(), os.pipe(), os.pipe()
    arb.pipes.watch(proc, Forked(1, out[0], err[0], ready[0]))
    for line in (statefiles.money_line(-5.0, 1000.0), statefiles.money_line(-6.0, 990.0)):
        os.write(ready[1], line.encode() + b"\n")
    os.write(out[1], b"a log line\n")
    condition = statefiles.condition_line(State.HALTED, "margin")
    timer = threading.Timer(0.3, os.write, (ready[1], condition.encode() + b"\n"))
    began = time.monotonic()
    timer.start()
    arb.wait(10.0)
    waited = time.monotonic() - began
    assert 0.25 <= waited < 5.0, waited  # not at the first line, not at the timeout
    assert (proc.worker_state, proc.worker_reason) == (State.HALTED, "margin")
    assert arb.fleet.readings  # the P&L lines were heard on the way
    threading.Timer(0.1, arb.pipes.wake).start()  # a signal's wake-up ends a wait too
    began = time.monotonic()
    arb.wait(10.0)
    assert time.monotonic() - began < 5.0
    for fd in (*out, *err, *ready):
        os.close(fd)
