"""The arbiter as a real process, with test targets in place of the worker.

Each test runs :func:`arbiter_main` in a subprocess (the arbiter forks, installs signal
handlers and must be single-threaded, so never inside pytest), with targets below that
crash, sleep, ignore SIGTERM... The worker and simulator wiring is tested in
``test_supervisor_cli.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bench.procstat import descendants
from multirun.account.final_report import HeldTrade, Leftover
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core import locks, procutil
from multirun.core.errors import EXIT_FATAL, NetworkError, SupervisorError
from multirun.core.redact import Secret
from multirun.core.statedir import StateDir
from multirun.ops import control_client as controlclient
from multirun.ops import status
from multirun.ops.stop import stop
from multirun.supervisor import arbiter as arbiter_module
from multirun.supervisor import sweeps as sweeps_module
from multirun.supervisor.arbiter import Arbiter
from multirun.supervisor.fork import ChildContext
from multirun.supervisor.output import LogRouter
from multirun.supervisor.program import Program, RestartPolicy, Sweep
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-api-key-value"

# --- targets: run in the forked child; get the work dir, the name and the child's context ---


def sleeper(workdir: Path, name: str, context: ChildContext) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello from {name}; my key is {SECRET}", flush=True)
    print(f"{name} on stderr", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


def refuser(workdir: Path, name: str, context: ChildContext) -> int:
    raise NetworkError("session: connection failed or dropped", endpoint="session")


def crasher(workdir: Path, name: str, context: ChildContext) -> int:
    print(f"{name}: boom", file=sys.stderr)
    return 3


def refused_for_good(workdir: Path, name: str, context: ChildContext) -> int:
    _note(workdir, f"{name} started")
    print(f"multirun: error: {name}: strategy cannot be built", file=sys.stderr, flush=True)
    return EXIT_FATAL


def slow_stopper(workdir: Path, name: str, context: ChildContext) -> int:
    """Takes 1 s to stop (a tick to finish, trades to close), then exits 0."""

    def stop(*_: object) -> None:
        time.sleep(1.0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"hello from {name}", flush=True)
    while True:
        time.sleep(3600)


def stubborn(workdir: Path, name: str, context: ChildContext) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"{name}: ignoring SIGTERM", flush=True)
    while True:
        time.sleep(3600)


def no_deathsig(workdir: Path, name: str, context: ChildContext) -> int:
    """Only the pipe watcher can notice the arbiter's death (prctl undone)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.prctl(procutil.PR_SET_PDEATHSIG, 0, 0, 0, 0)
    return sleeper(workdir, name, context)


def chatty(workdir: Path, name: str, context: ChildContext) -> int:
    for i in range(400):
        print(f"line {i:04d} " + "x" * 60)
    sys.stdout.flush()
    return sleeper(workdir, name, context)


def flood(workdir: Path, name: str, context: ChildContext) -> int:
    for i in range(5000):  # about 400 kB: more than any pipe or terminal buffers
        print(f"{name} line {i:05d} " + "x" * 60)
    print(f"{name} flooded", flush=True)
    return sleeper(workdir, name, context)


def _note(workdir: Path, text: str) -> None:
    """One line appended to ``order.log``: which child did what, in which order."""
    fd = os.open(workdir / "order.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (text + "\n").encode())
    os.close(fd)


def logged(workdir: Path, name: str, context: ChildContext) -> int:
    """An account that notes when SIGTERM stopped it."""

    def stop(*_: object) -> None:
        _note(workdir, f"account {name} stopped")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"hello from {name}", flush=True)
    while True:
        time.sleep(3600)


def service(workdir: Path, name: str, context: ChildContext) -> int:
    """A service that announces itself and notes when it is stopped."""

    def stop(*_: object) -> None:
        _note(workdir, f"service {name} stopped")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    context.ready(f"http://{name}.invalid")
    while True:
        time.sleep(3600)


def heartbeat(workdir: Path, name: str, context: ChildContext) -> int:
    """Touches its heartbeat every 0.1 s, except while ``<name>.frozen`` exists."""
    path = StateDir(workdir / "state").account(name).heartbeat
    path.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        if not (workdir / f"{name}.frozen").exists():
            path.touch()
        time.sleep(0.1)


# Sweeps: the account's "journal" is ``<name>.held`` (a JSON list of HeldTrade fields).


def sweeper(workdir: Path, name: str, context: ChildContext) -> int:
    _note(workdir, f"sweep {name} against {dict(context.announced)}")
    (workdir / f"{name}.held").unlink()
    return 0


def failing_sweeper(workdir: Path, name: str, context: ChildContext) -> int:
    _note(workdir, f"sweep {name}")
    print(f"multirun: error: {name}: 1 trade(s) left open", file=sys.stderr)
    return 3


def keeping_sweeper(workdir: Path, name: str, context: ChildContext) -> int:
    """on_stop keep: resolves its unknown order (now trade 7) and leaves it open."""
    _note(workdir, f"sweep {name}")
    (workdir / f"{name}.held").write_text(json.dumps([{**TRADE, "order_ref": f"mr-{name}-1"}]))
    return 0


def locked_out_sweeper(workdir: Path, name: str, context: ChildContext) -> int:
    _note(workdir, f"sweep {name}")
    print(f"multirun: error: {name}: traded by another process", file=sys.stderr, flush=True)
    return EXIT_FATAL


def hanging_sweeper(workdir: Path, name: str, context: ChildContext) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _note(workdir, f"sweep {name}")
    print(f"{name}: sweeping forever", flush=True)
    while True:
        time.sleep(3600)


def held(workdir: Path, name: str, on_stop: str) -> Leftover:
    path = workdir / f"{name}.held"
    if not path.exists():
        return Leftover(name, on_stop)
    return Leftover(name, on_stop, tuple(HeldTrade(**t) for t in json.loads(path.read_text())))


TARGETS = {
    f.__name__: f
    for f in (sleeper, crasher, refuser, stubborn, no_deathsig, chatty, flood, logged, service)
}
TARGETS.update({f.__name__: f for f in (heartbeat, sweeper, failing_sweeper, hanging_sweeper)})
TARGETS.update({f.__name__: f for f in (refused_for_good, keeping_sweeper, locked_out_sweeper)})
TARGETS.update({f.__name__: f for f in (slow_stopper,)})


def _without_linux_only_calls() -> None:
    """As on macOS: no os.pipe2, no prctl (PR_SET_PDEATHSIG), no /proc."""
    del os.pipe2
    procutil.set_parent_death_signal = lambda signum: False
    procutil.PROC = Path("/nonexistent-proc")


def arbiter_main(argument: str) -> None:
    """The subprocess: an arbiter over the targets named in ``argument`` (JSON)."""
    spec = json.loads(argument)
    workdir = Path(spec["dir"])
    if spec.get("term_after_first_fork"):
        _term_after_first_fork()
    if spec.get("fail_fork"):
        _fail_fork(spec["fail_fork"])
    if spec.get("no_linux"):
        _without_linux_only_calls()
    if "same_signal_s" in spec:  # a second signal forces sooner than a person would
        arbiter_module.SAME_SIGNAL_S = spec["same_signal_s"]
    if "sweep_grace" in spec:
        sweeps_module.SWEEP_GRACE_S = spec["sweep_grace"]
    state_dir = workdir / "state"
    accounts: dict[str, str] = spec["accounts"]
    router = LogRouter.for_accounts(
        accounts,
        state_dir,
        [SECRET],
        log_format=spec.get("format", "text"),
        max_bytes=spec.get("max_bytes", 5 * 1024 * 1024),
    )
    services = [
        Program(name, partial(TARGETS[kind], workdir, name), service=True, ready_timeout_s=10.0,
                death_signal=signal.SIGTERM)
        for name, kind in spec.get("services", {}).items()
    ]  # fmt: skip
    sweeps = {
        name: Sweep(partial(TARGETS[kind], workdir, name), partial(held, workdir, name, on_stop),
                    deadline_s=spec.get("stop_timeout", 10.0))
        for name, (kind, on_stop) in spec.get("sweeps", {}).items()
    }  # fmt: skip
    programs = [
        Program(name, partial(TARGETS[kind], workdir, name), sweep=sweeps.get(name))
        for name, kind in accounts.items()
    ]
    arbiter = Arbiter(
        [*services, *programs],
        state_dir=state_dir,
        router=router,
        policy=RestartPolicy(**spec.get("policy", {})),
        stop_timeout_s=spec.get("stop_timeout", 10.0),
        watchdog_timeout_s=spec.get("watchdog_timeout"),
        watchdog_kill_after_s=spec.get("kill_after"),
    )
    sys.exit(arbiter.run())


def _term_after_first_fork() -> None:
    """The first child gets SIGTERM the moment it exists, before the arbiter's child setup
    (as a SIGTERM from a stop that comes right after a spawn may)."""
    real_fork, forks = os.fork, [0]

    def fork() -> int:
        forks[0] += 1
        pid = real_fork()
        if pid == 0 and forks[0] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return pid

    os.fork = fork


def _fail_fork(number: int) -> None:
    """Fork call ``number`` fails as it does at the process limit."""
    real_fork, forks = os.fork, [0]

    def fork() -> int:
        forks[0] += 1
        if forks[0] == number:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return real_fork()

    os.fork = fork


# --- helpers -----------------------------------------------------------------------------


class Running:
    """An arbiter subprocess, its output file and its state files."""

    def __init__(self, workdir: Path, proc: subprocess.Popen[bytes]) -> None:
        self.workdir, self.proc = workdir, proc
        self.state_dir = workdir / "state"
        self.layout = StateDir(self.state_dir)
        self.out = workdir / "out.log"

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def sup(self) -> dict[str, Any]:
        return procutil.read_json(self.layout.supervisor_json) or {}

    def account(self, name: str) -> dict[str, Any]:
        return self.sup().get("accounts", {}).get(name, {})

    def wait_state(self, name: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_until(lambda: self.account(name).get("state") == state and self.account(name),
                          timeout)  # fmt: skip

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def arbiter(tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def run(accounts: dict[str, str], **options: Any) -> Running:
        spec = {"dir": str(tmp_path), "accounts": accounts, **options}
        code = "import sys, multirun; from tests.supervisor.test_arbiter import arbiter_main; "
        code += "arbiter_main(sys.argv[1])"
        with (tmp_path / "out.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(spec)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": ""},
            )  # fmt: skip
        running = Running(tmp_path, proc)
        started.append(running)
        wait_until(lambda: running.sup().get("pid") == proc.pid or proc.poll() is not None, 10)
        return running

    yield run
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


gone = procutil.exited  # a zombie waiting for init counts as gone


FAST = {"startsecs": 0.5, "backoff_base_s": 0.05, "backoff_cap_s": 0.2, "fatal_after": 100}


# --- restarts ----------------------------------------------------------------------------


@pytest.mark.process
def test_a_crashing_account_is_restarted_with_exponential_backoff(arbiter: Any) -> None:
    run = arbiter({"crashy": "crasher"}, policy=FAST)
    # The terminal is written from a thread of its own: wait for its lines, not the state.
    wait_until(lambda: run.output().count("restarting in") >= 4, 10)
    wait_until(lambda: "crashy     | crashy: boom" in run.output())
    out = run.output()
    delays = [
        line.split("restarting in ")[1] for line in out.splitlines() if "restarting in" in line
    ]
    assert delays[:4] == ["0.05 s", "0.1 s", "0.2 s", "0.2 s"]  # doubling, then capped
    assert "crashy: exited unexpectedly (exit 3)" in out
    assert "crashy     | crashy: boom" in out  # names padded to "supervisor"
    assert run.account("crashy")["last_exit"] == "exit 3"
    run.proc.send_signal(signal.SIGTERM)
    # 0 when the stop found it in BACKOFF, 1 when it was caught crashing (exit 3) meanwhile.
    assert run.wait_exit() in (0, 1)
    assert run.account("crashy")["state"] == "STOPPED"
    assert "restarting in" not in run.output().split("SIGTERM: stopping")[-1]


@pytest.mark.process
def test_an_account_failing_with_our_own_error_prints_one_line_not_a_traceback(
    arbiter: Any,
) -> None:
    run = arbiter({"gone": "refuser"}, policy=FAST)
    wait_until(lambda: run.account("gone").get("restarts", 0) >= 1, 10)
    wait_until(lambda: "gone: exited unexpectedly" in run.output())
    out = run.output()
    assert "gone       | multirun: error: session: connection failed or dropped" in out
    assert "Traceback" not in out and run.account("gone")["last_exit"] == "exit 3"
    assert run.account("gone")["last_error"] == "session: connection failed or dropped"
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() in (0, 1)


def test_backoff_delays_double_and_cap_at_60_s_by_default() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.process
def test_a_crash_loop_is_fatal_while_the_other_account_goes_on(arbiter: Any) -> None:
    policy = {**FAST, "fatal_after": 3, "startsecs": 1.0}
    run = arbiter({"bad": "crasher", "good": "sleeper"}, policy=policy)
    fatal = run.wait_state("bad", "FATAL")
    assert fatal["restarts"] == 2 and fatal["last_exit"] == "exit 3"
    good = run.wait_state("good", "RUNNING")
    assert good["restarts"] == 0 and procutil.alive(good["pid"])
    fatal_line = "bad: FATAL: exited within 1 s of its start 3 times in a row"
    wait_until(lambda: fatal_line in run.output())

    snapshot = status.collect(runner_for(run.state_dir, "bad", "good"))
    rows = {a.name: a for a in snapshot.accounts}
    assert snapshot.running and rows["bad"].state == "FATAL" and rows["good"].state == "RUNNING"
    text = status.render_text(snapshot)
    assert "FATAL" in text and f"running (pid {run.proc.pid})" in text

    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 1  # a FATAL account is not a clean stop
    after = status.collect(runner_for(run.state_dir, "bad", "good"))
    assert {a.name: a.state for a in after.accounts} == {"bad": "FATAL", "good": "STOPPED"}
    assert not after.running


@pytest.mark.process
def test_exit_78_is_fatal_at_once_with_its_error_as_the_reason(arbiter: Any) -> None:
    run = arbiter({"bad": "refused_for_good", "good": "sleeper"}, policy=FAST)
    fatal = run.wait_state("bad", "FATAL")
    assert fatal["restarts"] == 0 and fatal["last_exit"] == "exit 78"
    assert fatal["last_error"] == "bad: strategy cannot be built"
    assert "bad: strategy cannot be built" in fatal["note"]
    wait_until(lambda: "bad: FATAL: bad: strategy cannot be built (exit 78)" in run.output())
    good = run.wait_state("good", "STARTING")
    assert procutil.alive(good["pid"])
    row = {a.name: a for a in status.collect(runner_for(run.state_dir, "bad", "good")).accounts}
    assert row["bad"].state == "FATAL" and row["bad"].last_error == "bad: strategy cannot be built"
    # FAST restarts after 0.05 s: by now a restart would have shown
    assert (run.workdir / "order.log").read_text().count("bad started") == 1
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 1  # a FATAL account is not a clean stop
    assert (run.workdir / "order.log").read_text().count("bad started") == 1
    assert run.sup()["accounts"]["bad"]["state"] == "FATAL"


# --- stopping ----------------------------------------------------------------------------


@pytest.mark.process
def test_sigterm_stops_every_account_and_exits_0(arbiter: Any) -> None:
    run = arbiter({"a": "sleeper", "b": "sleeper"})
    pids = [run.wait_state(n, "STARTING", 10)["pid"] for n in ("a", "b")]
    wait_until(lambda: "hello from b" in run.output() and "hello from a" in run.output())
    names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids]
    assert names == ["mr:a", "mr:b"]  # each account is told apart in ps and top
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0
    assert all(gone(pid) for pid in pids)
    assert run.output().endswith("supervisor | stopped; every account flat\n")
    assert not run.layout.supervisor_pid.exists()
    assert run.sup()["exit_code"] == 0
    assert run.sup()["final_lines"] == ["stopped; every account flat"]
    assert run.sup()["stop_deadline_utc"] is None  # no stop under way any more


@pytest.mark.process
def test_stop_timeout_then_sigkill(arbiter: Any) -> None:
    run = arbiter({"mule": "stubborn", "ok": "sleeper"}, stop_timeout=0.5)
    pid = run.wait_state("mule", "STARTING")["pid"]
    wait_until(lambda: "ignoring SIGTERM" in run.output() and "hello from ok" in run.output())
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit() == 1
    assert gone(pid)
    assert "stop_timeout (0.5 s) passed for mule: SIGKILL to mule" in run.output()
    assert run.output().count("SIGKILL to") == 1  # once, not on every turn of the loop
    assert run.account("mule")["last_exit"] == "signal SIGKILL"
    assert run.account("ok")["last_exit"] == "exit 0"
    # no journal to read (no sweep): what the killed worker left is unknown
    unknown = "what mule holds is unknown (killed at stop_timeout (0.5 s), no journal to read)"
    assert run.sup()["final_lines"] == [f"stopped; exit status 1: {unknown}"]


@pytest.mark.process
def test_a_second_signal_forces(arbiter: Any) -> None:
    run = arbiter({"mule": "stubborn"}, stop_timeout=60, same_signal_s=0.2)
    pid = run.wait_state("mule", "STARTING")["pid"]
    wait_until(lambda: "ignoring SIGTERM" in run.output())
    run.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping 1 account(s)" in run.output())
    time.sleep(0.3)  # past the window in which it would be the same signal again
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit(timeout=5) == 1
    assert gone(pid)
    assert "SIGINT again: SIGKILL to mule" in run.output()


@pytest.mark.process
def test_a_signal_repeated_within_1_s_counts_once_then_a_deliberate_one_forces(
    arbiter: Any,
) -> None:
    run = arbiter({"mule": "stubborn"}, stop_timeout=60)
    pid = run.wait_state("mule", "STARTING")["pid"]
    wait_until(lambda: "ignoring SIGTERM" in run.output())
    first = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # apart enough to come as two signals, not one pending twice
    run.proc.send_signal(signal.SIGINT)  # as `kill -INT -PGID` or GNU timeout deliver it
    time.sleep(0.1)
    run.proc.send_signal(signal.SIGTERM)
    assert time.monotonic() - first < 0.9, "too slow to test the window"
    counted = "SIGINT again within 1 s: the same stop, counted once (Ctrl-C again to force)"
    wait_until(lambda: counted in run.output())
    wait_until(lambda: "SIGTERM after SIGINT within 1 s: the same stop" in run.output())
    assert "stopping 1 account(s)" in run.output()
    time.sleep(max(0.0, first + 1.2 - time.monotonic()))
    assert not gone(pid) and run.proc.poll() is None and "SIGKILL to" not in run.output()
    run.proc.send_signal(signal.SIGINT)  # a deliberate second Ctrl-C
    assert run.wait_exit(timeout=5) == 1
    assert gone(pid) and "SIGINT again: SIGKILL to mule" in run.output()


@pytest.mark.process
@pytest.mark.skipif(shutil.which("timeout") is None, reason="no GNU timeout (coreutils)")
def test_timeout_s_int_stops_gracefully_though_it_signals_twice(tmp_path: Path) -> None:
    """GNU timeout sends its signal to the supervisor, then to its whole process group:
    that is one stop, not a Ctrl-C pressed twice (which would SIGKILL the workers)."""
    spec = {"dir": str(tmp_path), "accounts": {"a": "slow_stopper", "b": "slow_stopper"}}
    code = "import sys, multirun; from tests.supervisor.test_arbiter import arbiter_main; "
    code += "arbiter_main(sys.argv[1])"
    done = subprocess.run(
        ["timeout", "-s", "INT", "3", sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": ""},
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 124, out  # timeout's own status: it had to signal
    assert "SIGINT: stopping 2 account(s)" in out
    assert "SIGKILL to" not in out and "a: stopped\n" in out and "b: stopped\n" in out, out
    sup = procutil.read_json(StateDir(tmp_path / "state").supervisor_json) or {}
    assert sup["exit_code"] == 0 and sup["final_lines"] == ["stopped; every account flat"]


@pytest.mark.process
def test_a_signal_reaching_a_child_before_its_setup_is_not_swallowed(arbiter: Any) -> None:
    run = arbiter({"a": "sleeper"}, term_after_first_fork=True, policy=FAST)
    # Killed by that SIGTERM (not kept by a copy of the arbiter's handler), then restarted.
    again = wait_until(lambda: run.account("a").get("restarts") == 1 and run.account("a"))
    assert again["last_exit"] == "signal SIGTERM"
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0


@pytest.mark.process
def test_a_failed_fork_is_a_failed_start_not_the_end_of_every_account(arbiter: Any) -> None:
    run = arbiter({"a": "sleeper", "b": "sleeper"}, fail_fork=2, policy=FAST)
    first = run.wait_state("a", "RUNNING")
    b = wait_until(lambda: run.account("b").get("pid") and run.account("b"))
    assert b["last_exit"] == "fork failed: Resource temporarily unavailable"
    assert run.account("a")["pid"] == first["pid"] and procutil.alive(first["pid"])
    wait_until(lambda: "hello from b" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0


@pytest.mark.process
def test_sigkill_of_the_supervisor_leaves_no_process_within_2_s(arbiter: Any) -> None:
    accounts = {"a": "sleeper", "b": "stubborn", "c": "no_deathsig"}
    run = arbiter(accounts)
    pids = [run.wait_state(name, "STARTING")["pid"] for name in accounts]
    wait_until(lambda: all(f"{n}" in run.output() for n in ("hello from c", "ignoring")))
    assert set(descendants(run.proc.pid)) >= set(pids)
    run.proc.kill()
    run.proc.wait()
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=2.0)


@pytest.mark.process
def test_without_pipe2_prctl_and_proc_a_sigkilled_supervisor_leaves_no_process(
    arbiter: Any,
) -> None:
    run = arbiter({"a": "sleeper", "b": "stubborn"}, no_linux=True)
    pids = [run.wait_state(name, "STARTING")["pid"] for name in ("a", "b")]
    wait_until(lambda: "hello from a" in run.output() and "ignoring" in run.output())
    run.proc.kill()  # only the parent-death pipe can tell them
    run.proc.wait()
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=2.0)


@pytest.mark.process
def test_stop_force_over_the_control_socket_kills_what_the_stop_waits_for(
    arbiter: Any,
) -> None:
    run = arbiter({"mule": "stubborn"}, stop_timeout=60, same_signal_s=0)
    pid = run.wait_state("mule", "STARTING")["pid"]
    wait_until(lambda: "ignoring SIGTERM" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping 1 account(s)" in run.output())
    run.proc.send_signal(signal.SIGTERM)  # a duplicate SIGTERM: logged, ignored
    wait_until(lambda: "SIGTERM again while stopping: ignored" in run.output())
    assert run.proc.poll() is None and not gone(pid)
    controlclient.shutdown(run.state_dir, force=True)
    assert run.wait_exit(timeout=10) == 1
    assert gone(pid) and "multirun stop --force: SIGKILL to mule" in run.output()


@pytest.mark.process
def test_multirun_stop_from_another_process(arbiter: Any) -> None:
    run = arbiter({"a": "sleeper"})
    wait_until(lambda: "hello from a" in run.output())
    lines: list[str] = []
    assert stop(run.state_dir, timeout_s=10, echo=lines.append) == 0
    assert run.proc.poll() == 0
    assert lines[0] == f"stopping the supervisor (pid {run.proc.pid}); waiting up to 10 s"
    assert lines[1:] == ["stopped; every account flat"] == run.sup()["final_lines"]


@pytest.mark.process
def test_stop_handles_a_stale_pidfile(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pidfile = StateDir(tmp_path).supervisor_pid
    pidfile.write_text(dead.stdout)
    lines: list[str] = []
    assert stop(tmp_path, timeout_s=5, echo=lines.append) == 0
    assert lines == [f"no supervisor running on {tmp_path} (removed a stale pidfile)"]
    assert not pidfile.exists()
    # A live pid that is not a multirun supervisor (ours, without the lock) is not signalled.
    pidfile.write_text(f"{os.getppid()}\n")
    assert stop(tmp_path, timeout_s=5, echo=lines.append) == 0


@pytest.mark.slow
def test_a_pidfile_unlinked_between_open_and_lock_is_not_the_one_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = StateDir(tmp_path).supervisor_pid
    exiting = procutil.PidFile(path)
    assert exiting.acquire() is None
    real_flock = procutil.fcntl.flock

    def flock(fd: int, operation: int) -> None:
        exiting.release()  # the running supervisor exits (unlinks) as we are about to lock
        real_flock(fd, operation)

    monkeypatch.setattr(procutil.fcntl, "flock", flock)
    starting = procutil.PidFile(path)
    assert starting.acquire() is None
    monkeypatch.setattr(procutil.fcntl, "flock", real_flock)
    assert procutil.read_pid(path) == os.getpid() and procutil.is_locked(path)
    # A third start must see the lock, not create a pidfile of its own beside ours.
    assert procutil.PidFile(path).acquire() == os.getpid()
    assert not procutil.remove_stale_pidfile(path) and path.exists()
    starting.release()
    assert not path.exists()


def test_a_lock_probed_by_status_for_an_instant_does_not_refuse_a_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_flock, calls = locks.fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        calls.append(operation)
        if len(calls) == 1:  # `multirun status` holds a shared lock at this moment
            raise BlockingIOError(errno.EWOULDBLOCK, "busy")
        real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    pidfile = procutil.PidFile(StateDir(tmp_path).supervisor_pid)
    assert pidfile.acquire() is None and len(calls) == 2
    pidfile.release()


@pytest.mark.process
def test_stop_when_the_supervisor_exits_as_it_is_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(done.stdout)
    procutil.write_json_atomic(StateDir(tmp_path).supervisor_json, {"pid": pid, "exit_code": 0})
    monkeypatch.setattr(status, "supervisor_pid", lambda state_dir: pid)  # found it alive
    lines: list[str] = []
    assert stop(tmp_path, timeout_s=5, echo=lines.append) == 0
    assert lines[-1] == "stopped: every account stopped cleanly"


@pytest.mark.process
def test_stop_waits_by_the_running_stop_timeout_until_a_deadline_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(done.stdout)
    data = {"pid": pid, "exit_code": 0, "stop_timeout_s": 2.5}  # as a reload may have set it
    procutil.write_json_atomic(StateDir(tmp_path).supervisor_json, data)
    monkeypatch.setattr(status, "supervisor_pid", lambda state_dir: pid)
    lines: list[str] = []
    assert stop(tmp_path, echo=lines.append) == 0
    # its worst case by stop_timeout: 2.5 (workers) + 2.5 + 10 (a sweep) + 5 (services),
    # plus 10 for the final report
    assert lines[0] == f"stopping the supervisor (pid {pid}); waiting up to 30 s"


@pytest.mark.process
def test_supervisor_json_records_the_running_stop_timeout(arbiter: Any) -> None:
    run = arbiter({"a": "sleeper"}, stop_timeout=4.0)
    wait_until(lambda: run.sup().get("stop_timeout_s") == 4.0)
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0


@pytest.mark.process
def test_a_second_start_on_the_same_state_dir_is_refused(arbiter: Any, tmp_path: Path) -> None:
    run = arbiter({"a": "sleeper"})
    run.wait_state("a", "STARTING")
    router = LogRouter.for_accounts(["a"], tmp_path / "state", [])
    second = Arbiter(
        [Program("a", lambda context: 0)],
        state_dir=tmp_path / "state",
        router=router,
        stop_timeout_s=10.0,
    )
    with pytest.raises(SupervisorError, match=rf"another supervisor \(pid {run.proc.pid}\)"):
        second.run()
    assert run.proc.poll() is None


# --- logs ----------------------------------------------------------------------------------


@pytest.mark.process
def test_output_is_prefixed_logged_per_account_and_scrubbed(arbiter: Any) -> None:
    run = arbiter({"alpha": "sleeper", "b": "sleeper"})
    log = run.layout.account("alpha").log
    # The terminal and the log file are written in either order: wait for both.
    wait_until(lambda: "hello from alpha" in run.output() and "hello from b" in run.output())
    wait_until(lambda: log.exists() and "hello from alpha" in log.read_text())
    wait_until(lambda: "b          | b on stderr" in run.output())
    out = run.output()
    assert "alpha      | hello from alpha; my key is ****" in out
    assert "b          | b on stderr" in out
    assert "supervisor | alpha: started, pid" in out
    assert SECRET not in out and "\033[" not in out  # not a TTY: no colour
    assert log.stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "stdout hello from alpha; my key is ****" in text and SECRET not in text
    assert "supervisor alpha: started, pid" in text and "hello from b" not in text


@pytest.mark.process
def test_json_log_format(arbiter: Any) -> None:
    run = arbiter({"alpha": "sleeper"}, format="json")
    wait_until(lambda: "alpha on stderr" in run.output() and "hello" in run.output())
    records = [json.loads(line) for line in run.output().splitlines()]
    assert all(set(r) == {"ts", "account", "stream", "line"} for r in records)
    ours = {r["stream"]: r for r in records if r["account"] == "alpha"}
    assert ours["stdout"]["line"] == "hello from alpha; my key is ****"
    assert ours["stderr"]["line"] == "alpha on stderr"
    assert any(r["account"] == "supervisor" for r in records)


@pytest.mark.process
def test_worker_logs_rotate(arbiter: Any) -> None:
    run = arbiter({"talker": "chatty"}, max_bytes=8000)
    log = run.layout.account("talker").log

    # Its 400 lines come before "hello": once that is in the file, every one was written.
    def written() -> bool:
        try:  # a rotation may rename the file between our looking and our reading
            return "hello from talker" in log.read_text()
        except FileNotFoundError:
            return False

    wait_until(written)
    rotated = [log.with_name(f"worker.log.{i}") for i in (1, 2, 3)]
    assert all(p.exists() for p in rotated) and not log.with_name("worker.log.4").exists()
    assert all(p.stat().st_size <= 8000 for p in (log, *rotated))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (log, *rotated))
    assert "line 0399" in log.read_text() or "line 0399" in rotated[0].read_text()


def runner_for(state_dir: Path, *names: str) -> RunnerSpec:
    accounts = tuple(
        AccountSpec(name=n, user="u", api_key=Secret("k"), accountid=n, runmode="livetest",
                    strategy="random", instrument="BTCUSD", volume=1.0, interval_s=5)
        for n in names
    )  # fmt: skip
    return RunnerSpec(path=state_dir / "runner.yaml", server="sim", state_dir=state_dir,
                      accounts=accounts)  # fmt: skip


def test_select_accounts(tmp_path: Path) -> None:
    from dataclasses import replace

    from multirun.core.errors import UsageError
    from multirun.supervisor.launch import select_accounts

    runner = runner_for(tmp_path, "a", "b", "c")
    a, b, c = runner.accounts
    changed = (a, replace(b, enabled=False), replace(c, runmode="livetrade"))
    runner = replace(runner, accounts=changed)
    with pytest.raises(SupervisorError, match=r"livetrade account\(s\) c trade real money"):
        select_accounts(runner)
    assert [s.name for s in select_accounts(runner, live=True)] == ["a", "c"]
    assert [s.name for s in select_accounts(runner, ["a"])] == ["a"]
    with pytest.raises(UsageError, match="account b is disabled"):
        select_accounts(runner, ["b"])
    with pytest.raises(UsageError, match="no account named x"):
        select_accounts(runner, ["x"])


@pytest.mark.process
def test_a_terminal_that_stops_reading_does_not_hold_the_supervisor(tmp_path: Path) -> None:
    spec = {"dir": str(tmp_path), "accounts": {"a": "flood", "b": "flood"}}
    code = (
        "import sys; from tests.supervisor.test_arbiter import arbiter_main; "
        "arbiter_main(sys.argv[1])"
    )
    proc = subprocess.Popen(  # its stdout is a pipe nobody reads, like a paused pager
        [sys.executable, "-c", code, json.dumps(spec)], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        logs = [StateDir(tmp_path / "state").account(n).log for n in ("a", "b")]
        wait_until(lambda: all(f.exists() and "flooded" in f.read_text() for f in logs), 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert all(f.read_text().count(" line ") == 5000 for f in logs)  # the files have all


# --- sweeps, the final report and the watchdog ------------------------------------------

TRADE = {"order_ref": "mr-a-1", "side": "BUY", "volume": 1.0, "instrument": "BTCUSD",
         "trade_id": "7"}  # fmt: skip
LEFT_OPEN = "a: LEFT OPEN: trade 7 BUY 1 BTCUSD (orderRef mr-a-1)"


def hold(tmp_path: Path, name: str, **fields: Any) -> None:
    trade = {**TRADE, "order_ref": f"mr-{name}-1", **fields}
    (tmp_path / f"{name}.held").write_text(json.dumps([trade]))


def last_lines(output: str, count: int) -> list[str]:
    """The last ``count`` lines of the terminal output, without their time."""
    return [line.split(" ", 1)[1] for line in output.splitlines()[-count:]]


def order(tmp_path: Path) -> list[str]:
    path = tmp_path / "order.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.process
def test_a_stop_sweeps_every_account_holding_trades_then_stops_the_services(
    arbiter: Any, tmp_path: Path
) -> None:
    hold(tmp_path, "a")
    hold(tmp_path, "b")  # b waits in BACKOFF when the stop comes
    policy = {**FAST, "backoff_base_s": 60.0, "backoff_cap_s": 60.0}
    run = arbiter({"a": "logged", "b": "crasher"}, services={"svc": "service"},
                  sweeps={"a": ["sweeper", "close"], "b": ["sweeper", "close"]},
                  policy=policy)  # fmt: skip
    run.wait_state("b", "BACKOFF")
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0
    steps = order(tmp_path)
    announced = "{'svc': 'http://svc.invalid'}"
    assert sorted(steps[:-1], key=steps.index) == steps[:-1]
    assert set(steps) == {"account a stopped", f"sweep a against {announced}",
                          f"sweep b against {announced}", "service svc stopped"}  # fmt: skip
    assert steps.index("account a stopped") < steps.index(f"sweep a against {announced}")
    assert steps[-1] == "service svc stopped"  # the services go after every sweep
    out = run.output()
    assert "b: its journal holds 1 trade(s); applying on_stop (close) from the journal" in out
    assert "b: sweep done: nothing of ours held" in out
    assert "LEFT OPEN" not in out
    final = ["2 account(s) needed a sweep: a (its worker: exit 0), b (its worker: exit 3)",
             "stopped; every account flat"]  # fmt: skip
    assert last_lines(out, 2) == [f"supervisor | {line}" for line in final]
    assert run.sup()["left_open"] == {} and run.sup()["exit_code"] == 0
    assert run.sup()["final_lines"] == final


@pytest.mark.process
def test_trades_a_sweep_could_not_close_are_named_and_the_exit_status_is_1(
    arbiter: Any, tmp_path: Path
) -> None:
    hold(tmp_path, "a")
    run = arbiter({"a": "sleeper", "b": "sleeper"}, sweeps={"a": ["failing_sweeper", "close"]})
    wait_until(lambda: "hello from a" in run.output() and "hello from b" in run.output())
    lines: list[str] = []
    assert stop(run.state_dir, timeout_s=10, echo=lines.append) == 1
    assert run.proc.poll() == 1
    final = [LEFT_OPEN, "1 account(s) needed a sweep: a (its worker: exit 0)",
             "stopped; exit status 1: 1 trade(s) left open (listed above)"]  # fmt: skip
    assert lines[1:] == final == run.sup()["final_lines"]  # as the supervisor printed them
    out = run.output()
    assert "a: sweep ended with exit 3" in out and f"supervisor | {LEFT_OPEN}" in out
    assert "stopped; exit status 1: 1 trade(s) left open (listed above)" in out
    assert "every account flat" not in out
    assert run.sup()["left_open"]["a"]["trades"][0]["trade_id"] == "7"
    snapshot = status.collect(runner_for(run.state_dir, "a", "b"))
    assert snapshot.left_open == [LEFT_OPEN]
    assert status.render_text(snapshot).endswith(f"left open at the last stop:\n  {LEFT_OPEN}")


@pytest.mark.process
def test_trades_kept_by_on_stop_keep_are_listed_and_not_swept(arbiter: Any, tmp_path: Path) -> None:
    hold(tmp_path, "a")
    run = arbiter({"a": "sleeper"}, sweeps={"a": ["failing_sweeper", "keep"]})
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0
    assert order(tmp_path) == []  # nothing to close, nothing to resolve: no sweep
    out = run.output()
    assert "a: kept open (on_stop: keep): trade 7 BUY 1 BTCUSD (orderRef mr-a-1)" in out
    kept = "stopped; nothing left open but 1 trade(s) kept (on_stop: keep; listed above)"
    assert out.endswith(f"supervisor | {kept}\n") and "every account flat" not in out


@pytest.mark.process
def test_a_sweep_that_leaves_a_kept_trade_says_so(arbiter: Any, tmp_path: Path) -> None:
    hold(tmp_path, "a", trade_id=None, state="INTENT")
    run = arbiter({"a": "sleeper"}, sweeps={"a": ["keeping_sweeper", "keep"]})
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0
    out = run.output()
    assert "a: sweep done: 1 trade(s) still held (on_stop: keep): trade 7 BUY 1 BTCUSD" in out
    assert "nothing of ours" not in out
    assert "a: kept open (on_stop: keep): trade 7 BUY 1 BTCUSD (orderRef mr-a-1)" in out


@pytest.mark.process
def test_a_sweep_locked_out_exit_78_is_a_failed_sweep(arbiter: Any, tmp_path: Path) -> None:
    hold(tmp_path, "a")
    run = arbiter({"a": "sleeper"}, sweeps={"a": ["locked_out_sweeper", "close"]})
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 1
    out = run.output()
    assert "a: sweep ended with exit 78: a: traded by another process; 1 trade(s) still held" in out
    assert f"supervisor | {LEFT_OPEN}" in out
    assert "stopped; exit status 1: 1 trade(s) left open (listed above)" in out
    assert run.sup()["accounts"]["a"]["state"] == "STOPPED"


@pytest.mark.process
def test_an_unresolved_order_is_swept_and_named_as_possibly_open(
    arbiter: Any, tmp_path: Path
) -> None:
    hold(tmp_path, "a", trade_id=None, state="INTENT")
    run = arbiter({"a": "sleeper"}, sweeps={"a": ["failing_sweeper", "keep"]})
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0  # on_stop keep: listed, exit status unaffected
    assert order(tmp_path) == ["sweep a"]
    assert "order BUY 1 BTCUSD (orderRef mr-a-1): sent or not, unknown" in run.output()


@pytest.mark.process
def test_a_signal_during_the_sweep_kills_it_and_names_what_is_left(
    arbiter: Any, tmp_path: Path
) -> None:
    hold(tmp_path, "a")
    run = arbiter({"a": "sleeper"}, sweeps={"a": ["hanging_sweeper", "close"]}, same_signal_s=0)
    wait_until(lambda: "hello from a" in run.output())
    run.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "a: sweeping forever" in run.output())
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit() == 1
    out = run.output()
    assert "SIGINT again: SIGKILL to the sweep of a" in out and LEFT_OPEN in out


@pytest.mark.process
@pytest.mark.parametrize(
    "fields",
    [{}, {"trade_id": None, "state": "INTENT"}],
    ids=["a trade", "an order of unknown fate"],
)
def test_a_worker_killed_at_stop_timeout_is_swept_and_a_flat_end_exits_0(
    arbiter: Any, tmp_path: Path, fields: dict[str, Any]
) -> None:
    # The order's fate outlasted the worker's stop_timeout; the sweep finds it closed (or
    # never executed): nothing is held, whatever it took.
    hold(tmp_path, "mule", **fields)
    run = arbiter({"mule": "stubborn"}, sweeps={"mule": ["sweeper", "close"]}, stop_timeout=0.5)
    wait_until(lambda: "ignoring SIGTERM" in run.output())
    lines: list[str] = []
    # The end state decides, not how the worker went: killed, swept, nothing held: 0.
    assert stop(run.state_dir, echo=lines.append) == 0
    assert run.wait_exit() == 0
    assert order(tmp_path) == ["sweep mule against {}"]
    assert run.sup()["left_open"] == {}
    final = ["1 account(s) needed a sweep: mule (killed at stop_timeout (0.5 s))",
             "stopped; every account flat"]  # fmt: skip
    assert lines[1:] == final == run.sup()["final_lines"]
    assert last_lines(run.output(), 2) == [f"supervisor | {line}" for line in final]


@pytest.mark.process
def test_the_stop_deadline_is_recorded_and_met(arbiter: Any, tmp_path: Path) -> None:
    hold(tmp_path, "mule")
    run = arbiter({"mule": "stubborn"}, sweeps={"mule": ["hanging_sweeper", "close"]},
                  stop_timeout=1.0, sweep_grace=0.5)  # fmt: skip
    wait_until(lambda: "ignoring SIGTERM" in run.output())
    assert run.sup()["stop_deadline_utc"] is None  # no stop under way
    signalled = time.time()
    run.proc.send_signal(signal.SIGTERM)
    recorded = wait_until(lambda: run.sup().get("stop_deadline_utc"), 5)
    deadline = datetime.fromisoformat(recorded).timestamp()
    # the worker's stop_timeout (1), then its sweep's deadline (1) and grace (0.5)
    assert 2.4 <= deadline - signalled <= 3.0
    assert run.wait_exit() == 1  # the sweep was killed past its deadline: LEFT OPEN
    stopped = datetime.fromisoformat(run.sup()["stopped_utc"]).timestamp()
    assert stopped <= deadline + 0.5  # the final report (one journal) takes no time
    assert run.sup()["final_lines"] == [
        LEFT_OPEN.replace("a: ", "mule: ").replace("mr-a-1", "mr-mule-1"),
        "1 account(s) needed a sweep: mule (killed at stop_timeout (1 s))",
        "stopped; exit status 1: 1 trade(s) left open (listed above)",
    ]


@pytest.mark.process
def test_a_silent_worker_is_overdue_then_killed_and_restarted(arbiter: Any, tmp_path: Path) -> None:
    run = arbiter({"a": "heartbeat", "old": "sleeper"}, watchdog_timeout=0.5, kill_after=2.0,
                  policy=FAST)  # fmt: skip
    first = run.wait_state("a", "RUNNING")
    wait_until(lambda: run.layout.account("a").heartbeat.exists())
    frozen = tmp_path / "a.frozen"
    frozen.touch()
    late = run.wait_state("a", "OVERDUE", 5)
    assert late["note"].startswith("no heartbeat for") and late["pid"] == first["pid"]
    rows = {r.name: r for r in status.collect(runner_for(run.state_dir, "a", "old")).accounts}
    assert rows["a"].state == "OVERDUE" and "no heartbeat" in status.render_text(
        status.collect(runner_for(run.state_dir, "a", "old"))
    )
    frozen.unlink()  # it comes back before the kill
    back = run.wait_state("a", "RUNNING", 5)
    assert back["pid"] == first["pid"] and back["note"] is None
    frozen.touch()
    again = wait_until(lambda: run.account("a").get("restarts") == 1 and run.account("a"), 8)
    frozen.unlink()
    assert again["last_exit"].startswith("signal SIGKILL (watchdog: no heartbeat for")
    assert run.account("old")["state"] == "RUNNING"  # no heartbeat file: not watched
    assert "a: OVERDUE: no heartbeat for" in run.output()
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0
