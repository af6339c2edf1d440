"""``multirun start`` / ``stop``: one forked, supervised process per account.

:class:`Arbiter` owns the whole process lifecycle, in the manner of gunicorn's arbiter:
it is single-threaded (so forking is safe), the package and the strategies are imported
before the first fork (children share those pages: a fork server, not one fresh
interpreter per account), and signals are only queued by their handlers and handled in
one place of the main loop, woken through a self-pipe::

    while True:
        handle queued signals (INT/TERM/HUP: stop; a second one: force; CHLD: reap)
        reap exited children (restart with backoff, FATAL after a crash loop)
        advance timers (STARTING -> RUNNING, BACKOFF -> respawn, stop deadline -> SIGKILL)
        wait for child output or a signal (select), print and log each line

Restarts follow supervisord: an unexpected exit (non-zero status or a signal) is
restarted after 1 s, 2 s, 4 s ... (capped at 60 s; a run of ``stable_s`` resets it);
exiting within ``startsecs`` of the start ``fatal_after`` times in a row makes the
account FATAL, left stopped while the others go on. Exit status 0 is a finished worker
(it was stopped by someone) and is not restarted.

Children: own process group (the terminal's Ctrl-C reaches only the arbiter, which
stops them in order), PR_SET_PDEATHSIG (SIGHUP for workers, SIGTERM for the simulator)
plus a thread watching a pipe only the arbiter holds open, so a SIGKILLed supervisor
leaves no process behind; stdout and stderr are pipes the arbiter reads.
"""

from __future__ import annotations

import contextlib
import gc
import os
import selectors
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, NoReturn

from multirun import procutil
from multirun.errors import MultirunError, SupervisorError, UsageError, exit_code_for
from multirun.logs import LineSplitter, LogFormat, LogRouter
from multirun.specs import AccountSpec, RunnerSpec
from multirun.status import (
    BACKOFF,
    FATAL,
    RUNNING,
    STARTING,
    STOPPED,
    SUPERVISOR_JSON,
    SUPERVISOR_PID,
)

STOPPING = "STOPPING"
SIM = "sim"
SIM_READY_TIMEOUT_S = 30.0
SIM_STOP_TIMEOUT_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CHILD_ERROR = "multirun: error: "  # how a child reports the error it exits with
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD)
# Meant for the arbiter when they reach a child still in its process group (Ctrl-C, the
# terminal closing): a child discards them; the arbiter stops it in order with SIGTERM.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGHUP)

# A worker's entry point in the forked child: gets the server URL (the supervisor's sim,
# or None), returns the exit status.
Target = Callable[[str | None], int]
# The simulator child's entry point: serves until SIGTERM, calls on_ready(url) once up.
SimTarget = Callable[[Callable[[str], None]], None]


@dataclass(frozen=True)
class RestartPolicy:
    startsecs: float = 3.0  # a run shorter than this is a failed start
    fatal_after: int = 5  # failed starts in a row -> FATAL
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    stable_s: float = 60.0  # a run this long resets the backoff

    def delay(self, failures: int) -> float:
        """Wait before restart number ``failures`` (1, 2, 4 ... seconds, capped)."""
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, failures - 1))


@dataclass
class Proc:
    """One supervised child (an account, or the simulator) and its counters."""

    name: str
    target: Target | None = None
    state: str = STOPPED
    pid: int | None = None
    started: float = 0.0  # monotonic
    started_wall: float | None = None
    spawns: int = 0
    failures: int = 0  # unexpected exits since the last stable run
    quick_failures: int = 0  # exits within startsecs, in a row
    last_exit: str | None = None
    last_error: str | None = None  # the last "multirun: error: ..." line it printed
    next_start: float | None = None  # monotonic, in BACKOFF
    note: str | None = None
    pipes: dict[int, tuple[str, LineSplitter]] = field(default_factory=dict)

    @property
    def restarts(self) -> int:
        return max(0, self.spawns - 1)

    def to_dict(self) -> dict[str, Any]:
        next_start = None
        if self.state == BACKOFF and self.next_start is not None:
            next_start = _iso(time.time() + self.next_start - time.monotonic())
        return {
            "state": self.state,
            "pid": self.pid,
            "started_utc": _iso(self.started_wall) if self.pid else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "next_start_utc": next_start,
            "note": self.note,
        }


def describe_status(status: int) -> tuple[str, bool]:
    """A waitpid status as ``exit 3`` / ``signal SIGKILL``, and whether it is exit 0."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"signal {name}", False
    code = os.waitstatus_to_exitcode(status)
    return f"exit {code}", code == 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class Arbiter:
    """Forks one child per target, restarts them, stops them, never leaves one behind."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        state_dir: Path,
        router: LogRouter,
        policy: RestartPolicy | None = None,
        stop_timeout_s: float = 30.0,
        sim: SimTarget | None = None,
        config: str | None = None,
    ) -> None:
        self.procs = {name: Proc(name, target) for name, target in targets.items()}
        self.state_dir = state_dir
        self.router = router
        self.policy = policy or RestartPolicy()
        self.stop_timeout_s = stop_timeout_s
        self.sim_target = sim
        self.sim = Proc(SIM)
        self.sim_url: str | None = None
        self.config = config
        self.pidfile = procutil.PidFile(state_dir / SUPERVISOR_PID)
        self.selector: selectors.BaseSelector | None = None
        self.wake_r = self.wake_w = -1
        self.death_r = self.death_w = -1  # children watch death_r: EOF = arbiter gone
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.killed = False  # SIGKILL sent on the stop deadline: do not send it every turn
        self.clean = True
        self.started_wall = time.time()

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; returns the exit status (0: every worker stopped cleanly)."""
        try:
            holder = self.pidfile.acquire()
        except OSError as error:
            raise SupervisorError(f"cannot lock {self.pidfile.path}: {error.strerror}") from None
        if holder is not None:
            raise SupervisorError(
                f"another supervisor (pid {holder}) is running on {self.state_dir}; "
                "stop it first with `multirun stop`"
            )
        try:
            self._setup()
            self.log(f"supervisor pid {os.getpid()}: starting {len(self.procs)} account(s)")
            if self.sim_target is not None:
                self.start_sim()
            if not self.stopping:
                for proc in self.procs.values():
                    self.spawn(proc)
            self.loop()
            return self.exit_code()
        finally:
            self._teardown()

    def loop(self) -> None:
        while True:
            self.handle_signals()
            self.reap()
            if self.stopping and not self.live():
                break
            if not self.stopping and not self.pending():
                self.log("no account left running")
                break
            self.advance()
            self.wait(self.timeout())
        self.stop_sim()

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.pid is not None]

    def pending(self) -> list[Proc]:
        """Accounts running or due to be restarted."""
        return [p for p in self.procs.values() if p.pid is not None or p.state == BACKOFF]

    def exit_code(self) -> int:
        fatal = any(p.state == FATAL for p in self.procs.values())
        return 0 if self.clean and not fatal else 1

    # --- signals ---------------------------------------------------------------------------------

    def _setup(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.death_r, self.death_w = os.pipe2(os.O_CLOEXEC)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)
        self.save()

    def _on_signal(self, signum: int, frame: object) -> None:
        """Queue only; handled in :meth:`handle_signals` (a byte on the pipe wakes select)."""
        self.signals.append(signum)
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"\0")

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reap() runs on every turn of the loop
            name = signal.Signals(signum).name
            if self.stopping:
                self.force(f"{name} again")
            else:
                self.begin_stop(name)

    # --- starting children -----------------------------------------------------------------------

    def spawn(self, proc: Proc) -> None:
        assert proc.target is not None
        target = proc.target
        try:
            pid, pipes = self._fork(proc.name, signal.SIGHUP, lambda: target(self.sim_url))
        except OSError as error:
            # EAGAIN/ENOMEM: a failed start of this account, retried with backoff; left to
            # propagate, it would end in _teardown SIGKILLing every account.
            proc.last_exit = f"fork failed: {error.strerror}"
            self.crashed(proc, proc.last_exit, ran=0.0)
            self.save()
            return
        proc.pid, proc.pipes = pid, pipes
        proc.state, proc.next_start, proc.note = STARTING, None, None
        proc.started, proc.started_wall = time.monotonic(), time.time()
        proc.spawns += 1
        again = f" (restart {proc.restarts})" if proc.restarts else ""
        self.log(f"{proc.name}: started, pid {pid}{again}", proc.name)
        self.save()

    def _fork(
        self, name: str, death_signal: int, main: Callable[[], int]
    ) -> tuple[int, dict[int, tuple[str, LineSplitter]]]:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        parent = os.getpid()
        # Until the child has reset them, our handlers would swallow a signal sent to it
        # (a SIGTERM from begin_stop right after this fork would be lost): block them
        # across the fork; the child unblocks once its own dispositions are in place.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(out_r)
                os.close(err_r)
                procutil.set_process_name(f"mr:{name}")  # ps/top tell the accounts apart
                self._child(parent, death_signal, out_w, err_w, main, mask)
        except OSError:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(out_w)
        os.close(err_w)
        secrets = self.router.scrub.secrets
        pipes = {out_r: ("stdout", LineSplitter(secrets)), err_r: ("stderr", LineSplitter(secrets))}
        for fd in pipes:
            os.set_blocking(fd, False)
            assert self.selector is not None
            self.selector.register(fd, selectors.EVENT_READ, name)
        return pid, pipes

    def _child(
        self,
        parent: int,
        death_signal: int,
        out_w: int,
        err_w: int,
        main: Callable[[], int],
        mask: set[signal.Signals],
    ) -> NoReturn:
        """In the forked child: detach from the arbiter's state, then run ``main``."""
        code = 1
        try:
            self._child_setup(parent, death_signal, out_w, err_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGTERM acts now
            code = main()
        except SystemExit as error:
            code = 0 if error.code is None else error.code if isinstance(error.code, int) else 1
        except MultirunError as error:  # ours carry a one-line message: no traceback
            print(f"{CHILD_ERROR}{error}", file=sys.stderr)
            code = exit_code_for(error)
        except BaseException as error:
            traceback.print_exc()
            code = exit_code_for(error)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)

    def _child_setup(self, parent: int, death_signal: int, out_w: int, err_w: int) -> None:
        """Runs with the arbiter's signals blocked (see :meth:`_fork`)."""
        signal.set_wakeup_fd(-1)
        for signum in TERMINAL_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # discards one already pending
        os.setpgid(0, 0)  # the terminal's Ctrl-C is for the arbiter, which stops us in order
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, _default(signum))
        procutil.set_parent_death_signal(death_signal)
        if os.getppid() != parent:  # the arbiter died before prctl took effect
            os._exit(1)
        self._close_inherited()
        _watch_parent(self.death_r, death_signal)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in {null, out_w, err_w} - {0, 1, 2}:
            os.close(fd)
        sys.stdout = _text(1)
        sys.stderr = _text(2)
        import logging

        logging.getLogger().handlers.clear()  # the worker configures its own, on stderr

    def _close_inherited(self) -> None:
        """Close the arbiter's descriptors in a child (all but death_r)."""
        fds = [self.wake_r, self.wake_w, self.death_w, *self.router.fds()]
        fds += [fd for p in (*self.procs.values(), self.sim) for fd in p.pipes]
        if self.selector is not None:
            with contextlib.suppress(Exception):
                fds.append(self.selector.fileno())  # type: ignore[attr-defined]
        if self.pidfile.fd >= 0:
            fds.append(self.pidfile.fd)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- the simulator ---------------------------------------------------------------------------

    def start_sim(self) -> None:
        """Fork the simulator child and wait for its URL (it listens on a free port)."""
        assert self.sim_target is not None
        sim_target = self.sim_target
        url_r, url_w = os.pipe2(os.O_CLOEXEC)

        def main() -> int:
            os.close(url_r)

            def ready(url: str) -> None:
                os.write(url_w, url.encode() + b"\n")
                os.close(url_w)

            sim_target(ready)
            return 0

        try:
            pid, pipes = self._fork(SIM, signal.SIGTERM, main)
        finally:
            os.close(url_w)
        self.sim.pid, self.sim.pipes, self.sim.state = pid, pipes, RUNNING
        try:
            self.sim_url = self._read_url(url_r)
        finally:
            os.close(url_r)
        if self.sim_url:
            self.log(f"sim: listening at {self.sim_url} (pid {pid})")
            self.save()

    def _read_url(self, url_r: int) -> str | None:
        deadline = time.monotonic() + SIM_READY_TIMEOUT_S
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(url_r, selectors.EVENT_READ)
            sel.register(self.wake_r, selectors.EVENT_READ)
            while not data.endswith(b"\n") and not self.stopping:
                self.handle_signals()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SupervisorError("the simulator did not start within 30 s")
                for key, _ in sel.select(min(left, 0.5)):
                    if key.fd == self.wake_r:
                        _drain(self.wake_r)
                        continue
                    chunk = os.read(url_r, 4096)
                    if not chunk:
                        self.reap()
                        raise SupervisorError("the simulator exited before it was ready")
                    data += chunk
                self._pump_sim()
        return data.decode().strip() or None

    def _pump_sim(self) -> None:
        assert self.selector is not None
        for key, _ in self.selector.select(0):
            if key.data is not None:
                self.read(key.fd)

    def stop_sim(self) -> None:
        if self.sim.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.sim.pid, signal.SIGTERM)
        deadline = time.monotonic() + SIM_STOP_TIMEOUT_S
        while self.sim.pid is not None and time.monotonic() < deadline:
            self.wait(min(0.2, deadline - time.monotonic()))
            self.reap()
        if self.sim.pid is not None:
            self.log("sim: did not stop within 5 s; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.sim.pid, signal.SIGKILL)
            self._wait_gone(self.sim, 5.0)

    def _wait_gone(self, proc: Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.pid is not None and time.monotonic() < deadline:
            self.wait(0.05)
            self.reap()

    # --- exits and restarts ----------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited(pid, status)

    def exited(self, pid: int, status: int) -> None:
        proc = next((p for p in (*self.procs.values(), self.sim) if p.pid == pid), None)
        if proc is None:
            return
        description, ok = describe_status(status)
        ran = time.monotonic() - proc.started
        proc.pid, proc.last_exit = None, description
        self._close_pipes(proc)
        if proc is self.sim:
            self.sim_exited(description)
        elif self.stopping:
            self.stopped(proc, description, ok)
        elif ok:
            proc.state, proc.note = STOPPED, "exited by itself (status 0): not restarted"
            self.log(f"{proc.name}: exited with status 0 by itself; not restarted", proc.name)
        else:
            self.crashed(proc, description, ran)
        self.save()

    def sim_exited(self, description: str) -> None:
        self.sim.state = STOPPED
        if self.stopping:
            self.log(f"sim: stopped ({description})")
        else:
            self.log(f"sim: the simulator exited unexpectedly ({description})")
            self.clean = False
            self.begin_stop("simulator gone")

    def stopped(self, proc: Proc, description: str, ok: bool) -> None:
        proc.state = STOPPED
        if ok or description == "signal SIGTERM":  # the signal we sent: stopped before its
            self.log(f"{proc.name}: stopped", proc.name)  # handlers were up, nothing to undo
        else:
            self.clean = False
            self.log(f"{proc.name}: stopped with {description}", proc.name)

    def crashed(self, proc: Proc, description: str, ran: float) -> None:
        policy = self.policy
        proc.quick_failures = proc.quick_failures + 1 if ran < policy.startsecs else 0
        proc.failures = 1 if ran >= policy.stable_s else proc.failures + 1
        if proc.quick_failures >= policy.fatal_after:
            proc.state = FATAL
            proc.note = (
                f"exited within {policy.startsecs:g} s of its start "
                f"{proc.quick_failures} times in a row"
            )
            message = f"{proc.name}: FATAL: {proc.note} (last: {description}); left stopped"
            self.log(message, proc.name)
            return
        delay = policy.delay(proc.failures)
        proc.state, proc.next_start = BACKOFF, time.monotonic() + delay
        self.log(
            f"{proc.name}: exited unexpectedly ({description}) after {ran:.1f} s; "
            f"restarting in {delay:g} s",
            proc.name,
        )

    def advance(self) -> None:
        now = time.monotonic()
        for proc in self.procs.values():
            if proc.state == STARTING and now - proc.started >= self.policy.startsecs:
                proc.state = RUNNING
                self.save()
            elif proc.state == BACKOFF and proc.next_start is not None and now >= proc.next_start:
                self.spawn(proc)
        if self.stopping and not self.killed and now >= self.stop_deadline and self.live():
            names = ", ".join(p.name for p in self.live())
            self.force(f"stop_timeout ({self.stop_timeout_s:g} s) passed for {names}")

    def timeout(self) -> float:
        now = time.monotonic()
        moments = [self.stop_deadline] if self.stopping and not self.killed else []
        for proc in self.procs.values():
            if proc.state == STARTING:
                moments.append(proc.started + self.policy.startsecs)
            elif proc.state == BACKOFF and proc.next_start is not None:
                moments.append(proc.next_start)
        return max(0.0, min([now + 1.0, *moments]) - now)

    # --- stopping --------------------------------------------------------------------------------

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.stop_timeout_s
        live = self.live()
        self.log(
            f"{reason}: stopping {len(live)} account(s) (SIGTERM; SIGKILL after "
            f"{self.stop_timeout_s:g} s; Ctrl-C again to force)"
        )
        for proc in self.procs.values():
            if proc.pid is not None:
                proc.state = STOPPING
                _kill(proc.pid, signal.SIGTERM)
            elif proc.state == BACKOFF:
                proc.state, proc.next_start = STOPPED, None
        self.save()

    def force(self, reason: str) -> None:
        live = self.live()
        if not live:
            return
        self.clean = False
        self.killed = True
        self.log(f"{reason}: SIGKILL to {', '.join(p.name for p in live)}")
        for proc in live:
            _kill(proc.pid, signal.SIGKILL)

    # --- output ----------------------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        assert self.selector is not None
        for key, _ in self.selector.select(timeout):
            if key.fd == self.wake_r:
                _drain(self.wake_r)
            else:
                self.read(key.fd)

    def read(self, fd: int) -> None:
        proc = self._owner(fd)
        if proc is None:
            return
        stream, splitter = proc.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            for line in splitter.feed(data):
                self._line(proc, line, stream)
            return
        for line in splitter.flush():
            self._line(proc, line, stream)
        self._unregister(proc, fd)

    def _owner(self, fd: int) -> Proc | None:
        return next((p for p in (*self.procs.values(), self.sim) if fd in p.pipes), None)

    def _close_pipes(self, proc: Proc) -> None:
        """After an exit: print what is left in its pipes, then close them."""
        for fd in list(proc.pipes):
            while fd in proc.pipes:
                self.read(fd)
                if fd in proc.pipes and not _readable(fd):
                    # A grandchild may hold the pipe open: flush and stop reading.
                    stream, splitter = proc.pipes[fd]
                    for line in splitter.flush():
                        self._line(proc, line, stream)
                    self._unregister(proc, fd)

    def _unregister(self, proc: Proc, fd: int) -> None:
        proc.pipes.pop(fd, None)
        if self.selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def log(self, message: str, account: str | None = None) -> None:
        self.router.event(message, account)

    def _line(self, proc: Proc, line: str, stream: str) -> None:
        """Route one line of ``proc``'s output; remember the error it exits with, for
        ``multirun status`` while it restarts (its next run rewrites its own status)."""
        if line.startswith(CHILD_ERROR):
            proc.last_error = self.router.scrub(line.removeprefix(CHILD_ERROR))
        self.router.line(proc.name, line, stream)

    def save(self) -> None:
        """Write ``state_dir/supervisor.json`` (atomic, 0600): read by ``multirun status``."""
        data = {
            "pid": os.getpid(),
            "config": self.config,
            "started_utc": _iso(self.started_wall),
            "updated_utc": _iso(time.time()),
            "stopping": self.stopping,
            "sim_url": self.sim_url,
            "accounts": {name: proc.to_dict() for name, proc in self.procs.items()},
        }
        with contextlib.suppress(OSError):
            procutil.write_json_atomic(self.state_dir / SUPERVISOR_JSON, data)

    def _teardown(self) -> None:
        """Never leave a child behind, whatever happened."""
        for proc in (*self.procs.values(), self.sim):
            if proc.pid is not None:
                _kill(proc.pid, signal.SIGKILL)
                self.clean = False
        if self.selector is not None:
            for proc in (*self.procs.values(), self.sim):
                if proc.pid is not None:
                    self._wait_gone(proc, 5.0)
        for proc in self.procs.values():
            if proc.state != FATAL:
                proc.state = STOPPED
        code = self.exit_code()
        self.save_final(code)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, _default(signum))
        for fd in (self.wake_r, self.wake_w, self.death_r, self.death_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.selector is not None:
            self.selector.close()
        self.router.close()
        self.pidfile.release()

    def save_final(self, code: int) -> None:
        self.save()
        data = procutil.read_json(self.state_dir / SUPERVISOR_JSON) or {}
        data.update(exit_code=code, stopped_utc=_iso(time.time()), stopping=False)
        with contextlib.suppress(OSError):
            procutil.write_json_atomic(self.state_dir / SUPERVISOR_JSON, data)
        if code == 0:
            self.log("every account stopped cleanly")
        else:
            self.log(f"stopped; exit status {code} (not every account stopped cleanly)")


def _default(signum: int) -> Any:
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def _kill(pid: int | None, signum: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


def _readable(fd: int) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(0))


def _text(fd: int) -> IO[str]:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _watch_parent(death_r: int, signum: int) -> None:
    """Fallback for PR_SET_PDEATHSIG: EOF on ``death_r`` means the arbiter is gone."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(death_r, 1):
                pass
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# --- `multirun start`: from a runner spec to an arbiter ------------------------------------------


def select_accounts(
    runner: RunnerSpec, only: Sequence[str] = (), *, live: bool = False
) -> list[AccountSpec]:
    """The accounts ``start`` runs: enabled ones (or ``--only`` ones); livetrade needs --live."""
    names = {a.name for a in runner.accounts}
    unknown = [n for n in only if n not in names]
    if unknown:
        known = ", ".join(sorted(names))
        raise UsageError(f"--only: no account named {', '.join(unknown)} (accounts: {known})")
    chosen = [a for a in runner.accounts if not only or a.name in only]
    disabled = [a.name for a in chosen if not a.enabled]
    if only and disabled:
        raise UsageError(f"--only: account {', '.join(disabled)} is disabled (enabled: false)")
    chosen = [a for a in chosen if a.enabled]
    real_money = [a.name for a in chosen if a.is_live]
    if real_money and not live:
        raise SupervisorError(
            f"livetrade account(s) {', '.join(real_money)} trade real money: start with --live, "
            "or leave them out with --only"
        )
    if not chosen:
        raise UsageError(f"no enabled account to start in {runner.path}")
    return chosen


def preload(runner: RunnerSpec, accounts: Sequence[AccountSpec]) -> None:
    """Import what every child needs once, here, so forked children share those pages."""
    import requests  # noqa: F401

    from multirun import client, journal, strategies, worker  # noqa: F401

    for spec in accounts:
        strategies.resolve(spec.strategy, runner.config_dir)
    if runner.uses_sim:
        import multirun.sim  # noqa: F401
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared objects


def run_worker(runner: RunnerSpec, name: str, server_url: str | None) -> int:
    from multirun import worker

    return worker.run_account(runner, name, server_url=server_url, supervised=True)


def serve_sim(on_ready: Callable[[str], None]) -> None:
    from multirun.sim import SimConfig, serve

    serve(SimConfig(host="127.0.0.1", port=0), on_ready=on_ready)


def secrets_of(runner: RunnerSpec) -> list[str]:
    return [a.api_key.reveal() for a in runner.accounts if a.api_key]


def start(
    runner: RunnerSpec,
    *,
    only: Sequence[str] = (),
    live: bool = False,
    log_format: LogFormat = "text",
    policy: RestartPolicy | None = None,
) -> int:
    """Run the selected accounts of ``runner`` under one arbiter, in the foreground."""
    accounts = select_accounts(runner, only, live=live)
    names = [a.name for a in accounts]
    preload(runner, accounts)
    router = LogRouter.for_accounts(
        names,
        runner.state_dir,
        secrets_of(runner),
        log_format=log_format,
    )
    arbiter = Arbiter(
        {name: partial(run_worker, runner, name) for name in names},
        state_dir=runner.state_dir,
        router=router,
        policy=policy,
        stop_timeout_s=runner.stop_timeout_s,
        sim=serve_sim if runner.uses_sim else None,
        config=str(runner.path),
    )
    return arbiter.run()


# --- `multirun stop` -----------------------------------------------------------------------------


def stop(state_dir: Path, *, timeout_s: float, echo: Callable[[str], None] = print) -> int:
    """SIGTERM the supervisor running on ``state_dir`` and wait for it to exit.

    Returns its exit status as it recorded it (0: every account stopped cleanly), or 0
    when none is running (a stale pidfile is removed).
    """
    from multirun.status import supervisor_pid

    pid = supervisor_pid(state_dir)
    if pid is None:
        if procutil.remove_stale_pidfile(state_dir / SUPERVISOR_PID):
            echo(f"no supervisor running on {state_dir} (removed a stale pidfile)")
        else:
            echo(f"no supervisor running on {state_dir}")
        return 0
    echo(f"stopping the supervisor (pid {pid}); waiting up to {timeout_s:g} s")
    with contextlib.suppress(ProcessLookupError):  # it exited since we found it
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not procutil.exited(pid):
        if time.monotonic() >= deadline:
            raise SupervisorError(
                f"the supervisor (pid {pid}) is still running after {timeout_s:g} s"
            )
        time.sleep(0.1)
    final = procutil.read_json(state_dir / SUPERVISOR_JSON) or {}
    code = final.get("exit_code") if final.get("pid") == pid else None
    code = code if isinstance(code, int) else 1
    echo("stopped: every account stopped cleanly" if code == 0 else f"stopped; exit status {code}")
    return code
