"""The arbiter: one loop that starts, reaps, restarts and stops the supervised children.

:class:`Arbiter` owns the whole process lifecycle, in the manner of gunicorn's arbiter:
it is single-threaded (so forking is safe), and signals are only queued by their
handlers and handled in one place of the main loop, woken through a self-pipe::

    while True:
        handle queued signals (INT/TERM/HUP: stop; a second one: force; CHLD: reap)
        reap exited children (restart with backoff, FATAL after a crash loop)
        start the accounts once every service has announced itself
        advance timers (STARTING -> RUNNING, BACKOFF -> respawn, stop deadline -> SIGKILL)
        wait for child output, a ready line or a signal (select), print and log each line

Every child is a :class:`Program`: the accounts, and services such as the simulator.
A service starts first; with a ready handshake (``ready_timeout_s``) the accounts start
once it has written its ready line (the simulator: its URL, which each account's target
is given). It stops after the accounts (they close their trades against it), and its
unexpected exit stops the run: what it held in memory would not come back with a restart.

Restarts follow supervisord: an unexpected exit (non-zero status or a signal) is
restarted after 1 s, 2 s, 4 s ... (capped at 60 s; a run of ``stable_s`` resets it);
exiting within ``startsecs`` of the start ``fatal_after`` times in a row makes the
account FATAL, left stopped while the others go on. Exit status 0 is a finished worker
(it was stopped by someone) and is not restarted.

Every change of a child's state goes through :meth:`Arbiter.transition`, which checks
it against :mod:`multirun.states`. What it supervises is in :mod:`multirun.programs`,
forking and the child's bootstrap in :mod:`multirun.spawn`, the pipes it reads in
:mod:`multirun.pipes`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from multirun import procutil, spawn
from multirun.clock import iso_ms
from multirun.errors import SupervisorError
from multirun.logs import LogRouter
from multirun.pipes import Pipes
from multirun.programs import Proc, Program, RestartPolicy, describe_status, live
from multirun.spawn import HANDLED_SIGNALS, ChildContext, Ready
from multirun.statedir import StateDir
from multirun.states import BACKOFF, FATAL, RUNNING, STARTING, STOPPED, STOPPING, allowed


class Arbiter:
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

    @property
    def accounts(self) -> list[Proc]:
        return [p for p in self.procs if not p.program.service]

    @property
    def services(self) -> list[Proc]:
        return [p for p in self.procs if p.program.service]

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
            if self.failure is not None:
                raise SupervisorError(self.failure)
            return self.exit_code()
        finally:
            self._teardown()

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
            if (self.stopping or self.winding_down) and not live(self.accounts):
                if not live(self.services):
                    break
                self.stop_services()
            self.advance()
            self.wait(self.timeout())

    def services_ready(self) -> bool:
        return all(
            p.pid is not None and (p.program.ready_timeout_s is None or p.name in self.announced)
            for p in self.services
        )

    def launch(self) -> None:
        self.launched = True
        for proc in self.accounts:
            self.spawn(proc)

    def pending(self) -> list[Proc]:
        """Accounts running or due to be restarted."""
        return [p for p in self.accounts if p.pid is not None or p.state == BACKOFF]

    def exit_code(self) -> int:
        fatal = any(p.state == FATAL for p in self.accounts)
        return 0 if self.clean and not fatal else 1

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
        self.death_r, self.death_w = os.pipe2(os.O_CLOEXEC)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)
        self.save()

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
            if self.stopping:
                self.force(f"{name} again")
            else:
                self.begin_stop(name)

    # --- starting children -----------------------------------------------------------------------

    def spawn(self, proc: Proc) -> None:
        program, announced = proc.program, dict(self.announced)

        def main(ready: Ready) -> int:
            return program.target(ChildContext(program.name, announced, ready))

        self.transition(proc, STARTING)
        try:
            forked = spawn.fork_child(
                program.name,
                main,
                death_signal=program.death_signal,
                death_r=self.death_r,
                inherited=self._inherited_fds(),
                handshake=program.ready_timeout_s is not None,
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
        self.pipes.watch(proc, forked)
        proc.next_start, proc.note = None, None
        proc.started, proc.started_wall = time.monotonic(), time.time()
        proc.spawns += 1
        again = f" (restart {proc.restarts})" if proc.restarts else ""
        self.log(f"{proc.name}: started, pid {forked.pid}{again}", proc.name)
        self.save()

    def _inherited_fds(self) -> list[int]:
        """The arbiter's descriptors, which a child closes (all but death_r)."""
        fds = [self.death_w, *self.router.fds(), *(self.pipes.fds() if self.pipes else [])]
        for proc in self.procs:
            fds += [*proc.pipes, *([proc.ready_fd] if proc.ready_fd is not None else [])]
        if self.pidfile.fd >= 0:
            fds.append(self.pidfile.fd)
        return fds

    def read_ready(self, proc: Proc) -> None:
        """Read a service's handshake pipe; its first line is what it announces."""
        assert self.pipes is not None
        line = self.pipes.read_ready(proc)
        if line is None:
            return
        if not line:
            if not self.stopping:
                self.fail(f"{proc.program.called} exited before it was ready")
            return
        self.announced[proc.name] = line
        if proc.state == STARTING:
            self.transition(proc, RUNNING)
        self.log(f"{proc.name}: ready at {line} (pid {proc.pid})")
        self.save()

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
        proc = next((p for p in self.procs if p.pid == pid), None)
        if proc is None:
            return
        description, ok = describe_status(status)
        ran = time.monotonic() - proc.started
        proc.pid, proc.last_exit = None, description
        if proc.ready_fd is not None:
            self.read_ready(proc)
        assert self.pipes is not None
        self.pipes.close_ready(proc)  # a grandchild holds it, silent: stop waiting
        self.pipes.drain(proc)
        if proc.state == STOPPING:
            self.stopped(proc, description, ok)
        elif proc.program.service:
            self.service_exited(proc, description)
        elif ok:
            note = "exited by itself (status 0): not restarted"
            self.transition(proc, STOPPED, note=note)
            self.log(f"{proc.name}: exited with status 0 by itself; not restarted", proc.name)
        else:
            self.crashed(proc, description, ran)
        self.save()

    def service_exited(self, proc: Proc, description: str) -> None:
        self.transition(proc, STOPPED)
        if self.stopping:
            self.log(f"{proc.name}: stopped ({description})")
        elif proc.program.ready_timeout_s is not None and proc.name not in self.announced:
            self.fail(f"{proc.program.called} exited before it was ready")
        else:
            self.log(f"{proc.name}: {proc.program.called} exited unexpectedly ({description})")
            self.clean = False
            self.begin_stop(f"{proc.name} gone")

    def stopped(self, proc: Proc, description: str, ok: bool) -> None:
        self.transition(proc, STOPPED)
        if proc.program.service:
            self.log(f"{proc.name}: stopped ({description})")
        elif ok or description == "signal SIGTERM":  # the signal we sent: stopped before its
            self.log(f"{proc.name}: stopped", proc.name)  # handlers were up, nothing to undo
        else:
            self.clean = False
            self.log(f"{proc.name}: stopped with {description}", proc.name)

    def crashed(self, proc: Proc, description: str, ran: float) -> None:
        policy = self.policy
        proc.quick_failures = proc.quick_failures + 1 if ran < policy.startsecs else 0
        proc.failures = 1 if ran >= policy.stable_s else proc.failures + 1
        if proc.quick_failures >= policy.fatal_after:
            note = (
                f"exited within {policy.startsecs:g} s of its start "
                f"{proc.quick_failures} times in a row"
            )
            self.transition(proc, FATAL, note=note)
            message = f"{proc.name}: FATAL: {note} (last: {description}); left stopped"
            self.log(message, proc.name)
            return
        delay = policy.delay(proc.failures)
        self.transition(proc, BACKOFF)
        proc.next_start = time.monotonic() + delay
        self.log(
            f"{proc.name}: exited unexpectedly ({description}) after {ran:.1f} s; "
            f"restarting in {delay:g} s",
            proc.name,
        )

    def advance(self) -> None:
        now = time.monotonic()
        for proc in self.procs:
            handshake = proc.program.ready_timeout_s
            if proc.state == STARTING and handshake is not None:
                if proc.pid is not None and now - proc.started >= handshake:
                    self.fail(f"{proc.program.called} did not start within {handshake:g} s")
            elif proc.state == STARTING and now - proc.started >= self.policy.startsecs:
                self.transition(proc, RUNNING)
                self.save()
            elif proc.state == BACKOFF and proc.next_start is not None and now >= proc.next_start:
                self.spawn(proc)
        if self.stopping and not self.killed and now >= self.stop_deadline and live(self.accounts):
            names = ", ".join(p.name for p in live(self.accounts))
            self.force(f"stop_timeout ({self.stop_timeout_s:g} s) passed for {names}")
        if self.service_deadline is not None and now >= self.service_deadline:
            self.kill_services()

    def timeout(self) -> float:
        now = time.monotonic()
        moments = [self.stop_deadline] if self.stopping and not self.killed else []
        if self.service_deadline is not None and not self.services_killed:
            moments.append(self.service_deadline)
        for proc in self.procs:
            if proc.state == STARTING:
                up_by = proc.program.ready_timeout_s or self.policy.startsecs
                moments.append(proc.started + up_by)
            elif proc.state == BACKOFF and proc.next_start is not None:
                moments.append(proc.next_start)
        return max(0.0, min([now + 1.0, *moments]) - now)

    # --- stopping --------------------------------------------------------------------------------

    def begin_stop(self, reason: str) -> None:
        """Stop every account (SIGTERM); the services follow once they are gone."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.stop_timeout_s
        self.log(
            f"{reason}: stopping {len(live(self.accounts))} account(s) (SIGTERM; SIGKILL after "
            f"{self.stop_timeout_s:g} s; Ctrl-C again to force)"
        )
        for proc in self.accounts:
            if proc.pid is not None:
                self.transition(proc, STOPPING)
                kill(proc.pid, signal.SIGTERM)
            elif proc.state == BACKOFF:
                self.transition(proc, STOPPED)
                proc.next_start = None
        self.save()

    def stop_services(self) -> None:
        """Once no account runs: SIGTERM each service (SIGKILL after its stop timeout)."""
        if self.service_deadline is not None:
            return
        running = live(self.services)
        timeout = max((p.program.stop_timeout_s for p in running), default=0.0)
        self.service_deadline = time.monotonic() + timeout
        for proc in running:
            self.transition(proc, STOPPING)
            kill(proc.pid, signal.SIGTERM)

    def kill_services(self, reason: str | None = None) -> None:
        """SIGKILL the services still running (their stop timeout passed, or a forced stop)."""
        if self.services_killed:
            return
        self.services_killed = True
        for proc in live(self.services):
            why = reason or f"did not stop within {proc.program.stop_timeout_s:g} s"
            self.log(f"{proc.name}: {why}; SIGKILL")
            kill(proc.pid, signal.SIGKILL)

    def force(self, reason: str) -> None:
        running = live(self.accounts)
        if not running:
            self.kill_services(reason)
            return
        self.clean = False
        self.killed = True
        self.log(f"{reason}: SIGKILL to {', '.join(p.name for p in running)}")
        for proc in running:
            kill(proc.pid, signal.SIGKILL)

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

    def save(self) -> None:
        """Write ``state_dir/supervisor.json`` (atomic, 0600): read by ``multirun status``."""
        data = {
            "pid": os.getpid(),
            "config": self.config,
            "started_utc": iso_ms(self.started_wall),
            "updated_utc": iso_ms(time.time()),
            "stopping": self.stopping,
            "announced": dict(self.announced),
            "accounts": {proc.name: proc.to_dict() for proc in self.accounts},
            "services": {proc.name: proc.to_dict() for proc in self.services},
        }
        with contextlib.suppress(OSError):
            procutil.write_json_atomic(self.layout.supervisor_json, data)

    def _teardown(self) -> None:
        """Never leave a child behind, whatever happened."""
        for proc in live(self.procs):
            kill(proc.pid, signal.SIGKILL)
            self.clean = False
        if self.pipes is not None:
            for proc in self.procs:
                self._wait_gone(proc, 5.0)
        for proc in self.procs:
            if proc.state != FATAL:
                self.transition(proc, STOPPED)
        code = self.exit_code()
        self.save_final(code)
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

    def save_final(self, code: int) -> None:
        self.save()
        data = procutil.read_json(self.layout.supervisor_json) or {}
        data.update(exit_code=code, stopped_utc=iso_ms(time.time()), stopping=False)
        with contextlib.suppress(OSError):
            procutil.write_json_atomic(self.layout.supervisor_json, data)
        if code == 0:
            self.log("every account stopped cleanly")
        else:
            self.log(f"stopped; exit status {code} (not every account stopped cleanly)")


def kill(pid: int | None, signum: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
