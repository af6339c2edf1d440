"""The arbiter: one loop that starts, reaps, restarts and stops the supervised children.

:class:`Arbiter` owns the whole process lifecycle, in the manner of gunicorn's arbiter:
it is single-threaded (so forking is safe), and signals are only queued by their
handlers and handled in one place of the main loop, woken through a self-pipe::

    while True:
        handle queued signals (INT/TERM: stop; INT again: force; TERM again: ignored;
                               HUP: reload; CHLD: reap)
        reap exited children (restart with backoff, FATAL after a crash loop)
        start the accounts once every service has announced itself
        stopping: sweep each account whose worker is gone and whose journal holds trades
        watch the workers' heartbeats (OVERDUE, then SIGKILL and restart)
        advance timers (STARTING -> RUNNING, BACKOFF -> respawn, stop deadline -> SIGKILL)
        move per-account commands on (stop, start, restart, reload: supervisor.account_requests)
        wait for child output, a ready line, a control request or a signal (select)

Every child is a :class:`Program`: the accounts, and services such as the simulator.
A service starts first; with a ready handshake (``ready_timeout_s``) the accounts start
once it has written its ready line (the simulator: its URL, which each account's target
is given). It stops after the accounts and their sweeps (they close their trades against it), and
its unexpected exit stops the run: what it held in memory would not come back with a
restart.

A stop applies every account's ``on_stop``: once its worker is gone, however it went, an
account whose journal still holds trades is swept (:mod:`multirun.supervisor.sweeps`); after
everything stopped, the final report (:mod:`multirun.supervisor.final_report`) names every trade
left open, and the exit status is 1 when an account with ``on_stop: close`` left one.
A worker whose heartbeat stops is OVERDUE, then killed (:mod:`multirun.supervisor.watchdog`).

Restarts follow supervisord (:mod:`multirun.supervisor.exits`): an unexpected exit (non-zero status
or a signal) is restarted after 1 s, 2 s, 4 s ... (capped at 60 s; a run of ``stable_s``
resets it); exiting within ``startsecs`` of the start ``fatal_after`` times in a row makes
the account FATAL, left stopped while the others go on. Exit status 78 (``EXIT_FATAL``,
a deterministic failure) makes it FATAL at once. Exit status 0 is a finished worker (it
was stopped by someone) and is not restarted.

The control socket (:mod:`multirun.supervisor.control_server`, ``state_dir/control.sock``) is
one more descriptor of that select: ``multirun stop/start/restart NAME...`` and ``reload`` act on
some accounts while the others keep their processes (:mod:`multirun.supervisor.account_requests`).

Every change of a child's state goes through :meth:`Arbiter.transition`, which checks
it against :mod:`multirun.core.states`. What it supervises is in :mod:`multirun.supervisor.program`,
forking and the child's bootstrap in :mod:`multirun.supervisor.fork`, the pipes it reads in
:mod:`multirun.supervisor.pipes`, how it takes an exit in :mod:`multirun.supervisor.exits`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multirun.core import procutil
from multirun.core.clock import iso_ms
from multirun.core.errors import SupervisorError
from multirun.core.procutil import kill
from multirun.core.redact import Redactor
from multirun.core.statedir import StateDir
from multirun.core.states import State, allowed
from multirun.supervisor import final_report
from multirun.supervisor import fork as spawn
from multirun.supervisor.account_requests import Catalog, Commands, Op
from multirun.supervisor.control_server import ControlServer
from multirun.supervisor.exits import Exits
from multirun.supervisor.final_report import Leftover
from multirun.supervisor.fork import HANDLED_SIGNALS, ChildContext, Ready
from multirun.supervisor.output import LogRouter
from multirun.supervisor.pipes import Pipes
from multirun.supervisor.program import Proc, Program, RestartPolicy, live
from multirun.supervisor.stopping import Stopping
from multirun.supervisor.sweeps import Sweeps
from multirun.supervisor.watchdog import BACK, KILL, LATE, HeartbeatWatchdog

# supervisor.json is written at most this often: a start or a stop of 500 accounts changes
# some child's state thousands of times, and each write holds every account (a write per
# change made a start and a stop quadratic: 1 s of CPU at 200 accounts). A change is in
# the file within this long; a control reply (an op done) and the final save write at once.
SAVE_EVERY_S = 0.1


class Arbiter(Stopping, Commands, Exits):
    """Forks one child per program, restarts them, stops them, never leaves one behind."""

    def __init__(
        self,
        programs: Sequence[Program],
        *,
        state_dir: Path,
        router: LogRouter,
        policy: RestartPolicy | None = None,
        stop_timeout_s: float,
        config: str | None = None,
        watchdog_timeout_s: float | None = None,
        watchdog_kill_after_s: float | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.procs = [Proc(program) for program in programs]  # names may repeat: sim, sim
        self.layout = StateDir(state_dir)
        self.router = router
        self.policy = policy or RestartPolicy()
        self.stop_timeout_s = stop_timeout_s
        self.config = config
        self.pidfile = procutil.PidFile(self.layout.supervisor_pid)
        self.pipes: Pipes | None = None  # from the start of run() on
        self.death_r = self.death_w = -1  # children watch death_r: EOF = arbiter gone
        self.signals: list[int] = []
        self.announced: dict[str, str] = {}  # each service's ready line
        self.launched = False  # the accounts were started (every service was ready)
        self.winding_down = False  # no account left running: the services go too
        self.failure: str | None = None  # a service failed to start: raised after teardown
        self.stopping = False
        self.stop_deadline = 0.0
        self.killed = False  # SIGKILL sent on the stop deadline: do not send it every turn
        self.service_deadline: float | None = None
        self.services_killed = False
        self.clean = True
        self.started_wall = time.time()
        self.sweeps = Sweeps()
        self.watchdog = HeartbeatWatchdog(
            self.layout, watchdog_timeout_s, kill_after_s=watchdog_kill_after_s
        )
        self.left_open: dict[str, Leftover] = {}  # the final report, once everything stopped
        self.catalog = catalog  # what per-account commands and reloads may start
        self.control: ControlServer | None = None
        self.ops: list[Op] = []
        self.hold_r = -1  # during a launch: the pipe whose EOF lets its workers start
        self.by_pid: dict[int, Proc] = {}  # every live child, accounts and sweeps alike
        self.dirty = False  # supervisor.json is behind: written at the end of a loop turn
        self.saved_at = float("-inf")  # monotonic

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; returns the exit status (0: every worker stopped cleanly)."""
        try:
            holder = self.pidfile.acquire()
        except OSError as error:
            raise SupervisorError(f"cannot lock {self.pidfile.path}: {error.strerror}") from None
        if holder is not None:
            raise SupervisorError(
                f"another supervisor (pid {holder}) is running on {self.layout.path}; "
                "stop it first with `multirun stop`"
            )
        try:
            self._setup()
            self.log(f"supervisor pid {os.getpid()}: starting {len(self.accounts)} account(s)")
            for proc in self.services:
                self.spawn(proc)
            self.loop()
        finally:
            self._teardown()
        if self.failure is not None:
            raise SupervisorError(self.failure)
        return self.exit_code()  # with the final report, read in _teardown

    def loop(self) -> None:
        while self.failure is None:
            self.handle_signals()
            self.reap()
            if self.failure is not None:
                break
            if not self.launched and not self.stopping and self.services_ready():
                self.launch()
            if self.launched and not (self.stopping or self.winding_down) and not self.pending():
                self.log("no account left running")
                self.winding_down = True
            if not (self.stopping or self.winding_down):
                self.start_sweeps(self.held_accounts())  # accounts stopped by a command
            if self.stopping or self.winding_down:
                self.start_sweeps()
                if not live(self.accounts) and not self.sweeps.live():
                    if not live(self.services):
                        break
                    self.stop_services()
            self.advance_ops()
            self.watch()
            self.advance()
            if self.control is not None:
                self.control.tick()
            self.flush()
            self.wait(self.timeout())

    def all_procs(self) -> list[Proc]:
        return [*self.procs, *self.sweeps.procs.values()]

    def services_ready(self) -> bool:
        return all(
            p.pid is not None and (p.program.ready_timeout_s is None or p.name in self.announced)
            for p in self.services
        )

    def launch(self) -> None:
        """Start every account. Each new worker waits until the last one is forked: the
        arbiter's forks (a few ms of CPU each) would otherwise share two cores with
        hundreds of starting workers, and the last account start many seconds late."""
        self.launched = True
        self.hold_r, hold_w = procutil.pipe()
        try:
            for proc in self.accounts:
                self.spawn(proc)
        finally:
            for fd in (hold_w, self.hold_r):
                os.close(fd)
            self.hold_r = -1

    def pending(self) -> list[Proc]:
        """Accounts running or due to be restarted."""
        return [p for p in self.accounts if p.pid is not None or p.state == State.BACKOFF or p.held]

    def exit_code(self) -> int:
        fatal = any(p.state == State.FATAL for p in self.accounts)
        left = final_report.any_failed(self.left_open)
        return 0 if self.clean and not fatal and not left else 1

    def fail(self, message: str) -> None:
        """A service could not start: leave the loop; :meth:`run` raises ``message``."""
        if self.failure is None:
            self.failure = message

    def transition(self, proc: Proc, new: str, *, note: str | None = None) -> None:
        """The one place a child's state changes (a disallowed move is logged, then made)."""
        if not allowed(proc.state, new):
            self.log(f"{proc.name}: unexpected state change {proc.state} -> {new}", proc.name)
        proc.state = new
        if note is not None:
            proc.note = note

    # --- signals ---------------------------------------------------------------------------------

    def _setup(self) -> None:
        self.pipes = Pipes(self.router)
        self.death_r, self.death_w = procutil.pipe()
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)
        self.control = ControlServer(
            self.layout.control_socket,
            self.handle,
            add_reader=self.pipes.add_reader,
            remove_reader=self.pipes.remove_reader,
            log=self.log,
        )
        try:
            self.control.open()
        except OSError as error:
            self.log(f"no control socket at {self.layout.control_socket}: {error.strerror}")
            self.control = None
        self.save(now=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        """Queue only; handled in :meth:`handle_signals` (a byte on the pipe wakes select)."""
        self.signals.append(signum)
        if self.pipes is not None:
            self.pipes.wake()

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reap() runs on every turn of the loop
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self.hangup()  # a reload: a terminal hangup never stops trading
            elif not self.stopping:
                self.begin_stop(name)
            elif signum == signal.SIGINT:  # only a second interactive stop forces
                self.force(f"{name} again")
            else:
                self.log(
                    f"{name} again while stopping: ignored (Ctrl-C or `multirun stop "
                    "--force` forces)"
                )

    # --- starting children -----------------------------------------------------------------------

    def spawn(self, proc: Proc) -> None:
        program, announced = proc.program, dict(self.announced)

        def main(ready: Ready) -> int:
            return program.target(ChildContext(program.name, announced, ready))

        self.transition(proc, State.STARTING)
        proc.kill_reason, proc.stop_deadline = None, None
        try:
            forked = spawn.fork_child(
                program.name,
                main,
                death_signal=program.death_signal,
                death_r=self.death_r,
                handshake=program.ready_timeout_s is not None or program.announces_up,
                hold=self.hold_r,
            )
        except OSError as error:
            # EAGAIN/ENOMEM: a failed start of this account, retried with backoff; left to
            # propagate, it would end in _teardown SIGKILLing every account.
            proc.last_exit = f"fork failed: {error.strerror}"
            if program.service:
                self.fail(f"cannot start {program.called}: {error.strerror}")
            else:
                self.crashed(proc, proc.last_exit, ran=0.0)
            self.save()
            return
        assert self.pipes is not None
        proc.pid = forked.pid
        self.by_pid[forked.pid] = proc
        self.pipes.watch(proc, forked)
        proc.next_start, proc.note = None, None
        proc.started, proc.started_wall = time.monotonic(), time.time()
        proc.spawns += 1
        again = f" (restart {proc.restarts})" if proc.restarts else ""
        what = "sweep started" if self.sweeps.owns(proc) else "started"
        self.log(f"{proc.name}: {what}, pid {forked.pid}{again}", proc.name)
        self.save()

    def read_ready(self, proc: Proc) -> None:
        """Read a service's handshake pipe; its first line is what it announces. An
        account's line says it is up (its exit before that is an ordinary crash)."""
        assert self.pipes is not None
        line = self.pipes.read_ready(proc)
        if line is None:
            return
        if proc.program.announces_up:
            if line and proc.state == State.STARTING:
                self.transition(proc, State.RUNNING)
                self.save()
            return
        if not line:
            if not self.stopping:
                self.fail(f"{proc.program.called} exited before it was ready")
            return
        self.announced[proc.name] = line
        if proc.state == State.STARTING:
            self.transition(proc, State.RUNNING)
        self.log(f"{proc.name}: ready at {line} (pid {proc.pid})")
        self.save()

    # --- the watchdog --------------------------------------------------------------------------

    def watch(self) -> None:
        """Act on what the heartbeat watchdog found (at most once a second)."""
        after = self.watchdog.kill_after_s
        for found in self.watchdog.check(self.accounts):
            proc, silent = found.proc, f"{found.silent_s:.0f} s"
            if found.action == LATE:
                note = f"no heartbeat for {silent}; SIGKILL in {after:g} s unless it comes back"
                if proc.state != State.STOPPING:
                    self.transition(proc, State.OVERDUE, note=note)
                self.log(f"{proc.name}: OVERDUE: {note}", proc.name)
            elif found.action == BACK:
                if proc.state == State.OVERDUE:
                    self.transition(proc, State.RUNNING)
                    proc.note = None
                self.log(f"{proc.name}: heartbeat back; RUNNING", proc.name)
            elif found.action == KILL:
                proc.kill_reason = f"watchdog: no heartbeat for {silent}"
                self.log(f"{proc.name}: no heartbeat for {silent}: SIGKILL", proc.name)
                kill(proc.pid, signal.SIGKILL)
            self.save()

    def advance(self) -> None:
        now = time.monotonic()
        self.overdue_stops(now)
        for proc in self.procs:
            handshake = proc.program.ready_timeout_s
            if proc.state == State.STARTING and handshake is not None:
                if proc.pid is not None and now - proc.started >= handshake:
                    self.fail(f"{proc.program.called} did not start within {handshake:g} s")
            elif proc.state == State.STARTING and now - proc.started >= self.policy.startsecs:
                self.transition(proc, State.RUNNING)
                self.save()
            elif (
                proc.state == State.BACKOFF
                and proc.next_start is not None
                and now >= proc.next_start
            ):
                self.spawn(proc)
        for proc in self.sweeps.late(now):
            if proc.kill_reason is None:
                proc.kill_reason = "past its deadline"
                self.log(f"{proc.name}: the sweep is past its deadline: SIGKILL", proc.name)
                kill(proc.pid, signal.SIGKILL)
        if self.stopping and not self.killed and now >= self.stop_deadline and live(self.accounts):
            names = ", ".join(p.name for p in live(self.accounts))
            self.force(f"stop_timeout ({self.stop_timeout_s:g} s) passed for {names}")
        if self.service_deadline is not None and now >= self.service_deadline:
            self.kill_services()

    def timeout(self) -> float:
        now = time.monotonic()
        moments = [self.stop_deadline] if self.stopping and not self.killed else []
        moments += [p.stop_deadline for p in self.accounts if p.pid and p.stop_deadline]
        if self.service_deadline is not None and not self.services_killed:
            moments.append(self.service_deadline)
        if self.dirty:
            moments.append(self.saved_at + SAVE_EVERY_S)
        moments += self.sweeps.moments()
        for proc in self.procs:
            if proc.state == State.STARTING:
                up_by = proc.program.ready_timeout_s or self.policy.startsecs
                moments.append(proc.started + up_by)
            elif proc.state == State.BACKOFF and proc.next_start is not None:
                moments.append(proc.next_start)
        return max(0.0, min([now + 1.0, *moments]) - now)

    # --- output and state ----------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        """Wait for output, a ready line or a signal (up to ``timeout`` s); route it."""
        assert self.pipes is not None
        for proc, fd in self.pipes.select(timeout):
            if fd == proc.ready_fd:
                self.read_ready(proc)
            else:
                self.pipes.read(proc, fd)

    def log(self, message: str, account: str | None = None) -> None:
        self.router.event(message, account)

    def add_account(self, proc: Proc) -> None:
        """An account a command or a reload starts that this run did not start with."""
        self.procs.append(proc)
        self.router.add_account(proc.name)

    def add_secrets(self, secrets: Sequence[str]) -> None:
        """A reload's API keys: masked in every line from now on."""
        known = self.router.redact.secrets
        if set(secrets) - set(known):
            self.router.redact = Redactor([*known, *secrets])

    def status_data(self) -> dict[str, Any]:
        """The arbiter's view: what ``supervisor.json`` holds, and the control reply's."""
        return {
            "pid": os.getpid(),
            "config": self.config,
            "started_utc": iso_ms(self.started_wall),
            "updated_utc": iso_ms(time.time()),
            "stopping": self.stopping,
            "stop_timeout_s": self.stop_timeout_s,  # `multirun stop` waits by the running value
            "announced": dict(self.announced),
            "accounts": {proc.name: proc.to_dict() for proc in self.accounts},
            "services": {proc.name: proc.to_dict() for proc in self.services},
        }

    def save(self, *, now: bool = False) -> None:
        """``state_dir/supervisor.json`` (read by ``multirun status``) is to be rewritten:
        at the end of this loop turn, at most every :data:`SAVE_EVERY_S`; ``now``: at once."""
        self.dirty = True
        if now:
            self.write_status()

    def flush(self) -> None:
        """Once a loop turn: write ``supervisor.json`` if it is behind and its time came."""
        if self.dirty and time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.write_status()

    def write_status(self) -> None:
        """Write ``state_dir/supervisor.json`` (atomic, 0600) now."""
        self.dirty, self.saved_at = False, time.monotonic()
        data = self.status_data()
        with contextlib.suppress(OSError):
            procutil.write_json_atomic(self.layout.supervisor_json, data, compact=True)

    def _teardown(self) -> None:
        """Never leave a child behind, whatever happened."""
        self.abandon_ops("the supervisor stopped")
        if self.control is not None:
            self.control.shut()
        for proc in live(self.all_procs()):
            kill(proc.pid, signal.SIGKILL)
            self.clean = False
        if self.pipes is not None:
            for proc in self.all_procs():
                self._wait_gone(proc, 5.0)
        for proc in self.all_procs():
            if proc.state != State.FATAL:
                self.transition(proc, State.STOPPED)
        self.left_open = {p.name: self.sweeps.final(p) for p in self.accounts if p.program.sweep}
        self.save_final(self.exit_code())
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, spawn.default_handler(signum))
        for fd in (self.death_r, self.death_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.pipes is not None:
            self.pipes.shut()
        self.router.close()
        self.pidfile.release()

    def _wait_gone(self, proc: Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.pid is not None and time.monotonic() < deadline:
            self.wait(0.05)
            self.reap()
