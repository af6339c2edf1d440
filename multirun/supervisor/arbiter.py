"""The arbiter: one loop that starts, reaps, restarts and stops the supervised children.

:class:`Arbiter` owns the whole lifecycle of a run, in the manner of gunicorn's arbiter:
it is single-threaded (so forking is safe), and signals are only queued by their
handlers and handled in one place of the main loop, woken through a self-pipe::

    while the phase is not DONE:
        handle queued signals (INT/TERM: stop; INT again: force; TERM again: ignored;
                               either within 1 s of the last one taken: the same one;
                               HUP: reload; CHLD: reap)
        reap exited children (each Proc says what its exit means: restart, FATAL, stopped)
        move the phase on (below)
        move per-account requests on (stop, start, restart, reload: AccountRequests)
        watch the workers' heartbeats (OVERDUE, then SIGKILL and restart)
        advance timers (STARTING -> RUNNING, BACKOFF -> respawn, stop deadlines -> SIGKILL)
        wait for child output, a ready line, a control request or a signal (select)

The run goes through one :class:`Phase` at a time, forward only::

    STARTING_SERVICES --every service ready--> RUNNING --no account left--> STOPPING_ACCOUNTS
    STARTING_SERVICES, RUNNING --a stop asked--> STOPPING_ACCOUNTS
    STOPPING_ACCOUNTS --no worker and no sweep left--> STOPPING_SERVICES --none left--> DONE
    STOPPING_ACCOUNTS --a forced stop with nothing else left--> STOPPING_SERVICES

Whether a stop was asked (a signal, ``multirun stop``, a service gone) and when its
SIGKILL is due is a :class:`StopRequest`, a fact of its own: with no account left
running, a run winds down by itself (sweeps, then the services) with none asked, and
per-account requests are still served then.

Every child is a :class:`~multirun.supervisor.program.Proc`: the accounts, and services
such as the simulator. A service starts first; with a ready handshake
(``ready_timeout_s``) the accounts start once it has written its ready line (the
simulator: its URL, which each account's target is given). It stops after the accounts
and their sweeps (they close their trades against it), and its unexpected exit stops the
run: what it held in memory would not come back with a restart.

A stop goes in this order:

1. every account's worker gets SIGTERM (finish the tick, apply ``on_stop``), and SIGKILL
   after ``stop_timeout``; an account waiting in BACKOFF is not restarted;
2. once an account's worker is gone, however it went, its journal is read: if it still
   holds trades, a sweep applies ``on_stop`` from it (:mod:`multirun.supervisor.sweeps`);
3. once no worker and no sweep runs, the services (the simulator) get SIGTERM;
4. the final report (:mod:`multirun.account.final_report`) names every trade left
   open and the accounts that needed a sweep; the exit status comes from what the
   journals hold then: 0 when nothing of ours is held (however many workers had to be
   killed and swept), 1 when an account with ``on_stop: close`` holds something, what an
   account holds is unknown, an account is FATAL or a service died.

Its worst case is known from the start (``stop_timeout``, then a sweep's deadline and
grace, then the services' stop timeout): ``supervisor.json``'s ``stop_deadline_utc``,
which ``multirun stop`` waits for, kept up to date as the stop moves on.

Signalling again forces the step under way: SIGKILL to the workers (their sweeps still
run), then to the sweeps, then to the services. A signal within 1 s of the last one taken
is that one again, not a second: ``timeout -s INT`` and ``kill -INT -PGID`` deliver each
signal twice (to the process and to its group). A worker whose heartbeat stops is
OVERDUE, then killed (:mod:`multirun.supervisor.watchdog`).

Restarts follow supervisord (:mod:`multirun.supervisor.program`): an unexpected exit
(non-zero status or a signal) is restarted after 1 s, 2 s, 4 s ... (capped at 60 s; a run
of ``stable_s`` resets it); exiting within ``startsecs`` of the start ``fatal_after``
times in a row makes the account FATAL, left stopped while the others go on. Exit status
78 (``EXIT_FATAL``, a deterministic failure) makes it FATAL at once. Exit status 0 is a
finished worker (it was stopped by someone) and is not restarted.

The control socket (:mod:`multirun.supervisor.control_server`, ``state_dir/control.sock``)
is one more descriptor of that select: ``multirun stop`` is handled here, ``multirun
stop/start/restart NAME...`` and ``reload`` act on some accounts while the others keep
their processes (:mod:`multirun.supervisor.account_requests`); ``multirun
pause/resume/flatten`` go down each worker's command pipe
(:mod:`multirun.supervisor.pause_requests`). Each worker's money line (its day's P&L and
equity) is summed against the file's ``risk:`` the moment it is read
(:mod:`multirun.supervisor.fleet_risk`): a breach sends ``on_breach`` to every account
in the same loop turn. Forking and the child's
bootstrap are in :mod:`multirun.supervisor.fork`, the pipes it reads in
:mod:`multirun.supervisor.pipes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multirun.account import final_report, ownership
from multirun.account.final_report import Leftover
from multirun.config.specs import RiskSpec
from multirun.core import procutil, statefiles
from multirun.core.clock import iso_ms
from multirun.core.errors import JournalError, SupervisorError
from multirun.core.procutil import kill
from multirun.core.redact import Redactor
from multirun.core.statedir import StateDir
from multirun.core.statefiles import SupervisorFile
from multirun.core.states import State
from multirun.supervisor import fork as spawn
from multirun.supervisor import previous_run
from multirun.supervisor.account_requests import AccountRequests, Catalog, Reread
from multirun.supervisor.control_server import Conn, ControlServer, error_reply
from multirun.supervisor.fleet_risk import Breach, FleetRisk
from multirun.supervisor.fork import HANDLED_SIGNALS, ChildContext, Forked, Ready
from multirun.supervisor.output import LogRouter
from multirun.supervisor.pause_requests import COMMANDS as PAUSE_COMMANDS
from multirun.supervisor.pause_requests import PauseRequests
from multirun.supervisor.pipes import Pipes
from multirun.supervisor.program import Proc, Program, RestartPolicy, ServiceFailed, live
from multirun.supervisor.stop_outcome import StopOutcome
from multirun.supervisor.sweeps import Sweeps
from multirun.supervisor.watchdog import BACK, KILL, LATE, HeartbeatWatchdog

# supervisor.json is written at most this often: a start or a stop of 500 accounts changes
# some child's state thousands of times, and each write holds every account (a write per
# change made a start and a stop quadratic: 1 s of CPU at 200 accounts). A change is in
# the file within this long; a control reply (an op done) and the final save write at once.
SAVE_EVERY_S = 0.1

# A stop signal (INT, TERM) within this long of the last one taken is the same one again:
# tools deliver one signal twice (GNU timeout: to the command and to its process group).
# Forcing takes a deliberate second Ctrl-C, or `multirun stop --force`.
SAME_SIGNAL_S = 1.0


def stamp(ts: float) -> str:
    """``supervisor.json``'s times (:func:`~multirun.core.clock.iso_ms` of a time that is there)."""
    text = iso_ms(ts)
    assert text is not None
    return text


class Phase(enum.Enum):
    """Where a run is in its lifecycle (supervisord's ``mood``); it only moves forward."""

    STARTING_SERVICES = "starting services"  # the accounts wait for every ready line
    RUNNING = "running"  # the accounts are started, restarted, watched
    # a stop was asked (SIGTERM to every worker), or no account is left running: each
    # account whose worker is gone is swept
    STOPPING_ACCOUNTS = "stopping accounts"
    STOPPING_SERVICES = "stopping services"  # no worker, no sweep left: the services go
    DONE = "done"  # nothing left running: the loop ends


@dataclass
class StopRequest:
    """A stop was asked for (a signal, ``multirun stop``, a service gone)."""

    reason: str
    kill_at: float | None  # monotonic: SIGKILL to the workers still running; None once sent


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
        watchdog_timeout_s: float | None = None,
        watchdog_kill_after_s: float | None = None,
        catalog: Catalog | None = None,
        risk: RiskSpec | None = None,
    ) -> None:
        # names may repeat: sim, sim
        self.procs = [Proc(program, self.log) for program in programs]
        self.layout = StateDir(state_dir)
        self.router = router
        self.policy = policy or RestartPolicy()
        self.stop_timeout_s = stop_timeout_s
        self.config = config
        self.pidfile = procutil.PidFile(self.layout.supervisor_pid)
        self.pipes: Pipes | None = None  # from the start of run() on
        self.death_r = self.death_w = -1  # children watch death_r: EOF = arbiter gone
        self.signals: list[tuple[int, float]] = []  # (signal, monotonic time it came)
        self.last_stop_signal: tuple[int, float] | None = None  # the last INT/TERM taken
        self.announced: dict[str, str] = {}  # each service's ready line
        self.phase = Phase.STARTING_SERVICES
        self.stop_request: StopRequest | None = None
        self.services_kill_at: float | None = None  # monotonic, once they got SIGTERM
        self.failure: str | None = None  # a service failed to start: raised after teardown
        self.failed: Proc | None = None  # that service
        self.outcome = StopOutcome()  # what the stop finds that no journal tells
        self.started_wall = time.time()
        self.sweeps = Sweeps()
        self.watchdog = HeartbeatWatchdog(
            self.layout, watchdog_timeout_s, kill_after_s=watchdog_kill_after_s
        )
        self.left_open: dict[str, Leftover] = {}  # the final report, once everything stopped
        self.control: ControlServer | None = None
        self.requests = AccountRequests(
            catalog,  # what per-account requests and reloads may start
            accounts=lambda: self.accounts,
            add_account=self.add_account,
            sweeps=self.sweeps,
            spawn=self.spawn,
            log=self.log,
            save=self.save,
            reply=self.reply,
            stop_timeout_s=lambda: self.stop_timeout_s,
            adopt=self.adopt,
        )
        # the file-level money limits, against the sum of what the workers say on their pipes
        self.fleet = FleetRisk(risk)
        self.fleet_looked_at = 0.0  # monotonic: the last look for a fleet pause a new day ends
        self.saves = 0  # calls of save(): every change of what status_data() holds
        self.fleet_resumes: set[tuple[int | None, str | None]] = set()  # (pid, reason) sent
        self.pauses = PauseRequests(
            lambda: self.accounts,
            log=self.log,
            reply=self.reply,
            save=self.save,
            resumed=self.fleet.resumed,
            flatten_wait_s=lambda: self.stop_timeout_s + 30.0,
        )
        self.hold_r = -1  # during a launch: the pipe whose EOF lets its workers start
        self.by_pid: dict[int, Proc] = {}  # every live child, accounts and sweeps alike
        self.dirty = False  # supervisor.json is behind: written at the end of a loop turn
        self.saved_at = float("-inf")  # monotonic
        self.previous_died: list[str] = []  # what a supervisor that died left (first lines)

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; returns the exit status (0: nothing of ours held)."""
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
            self.look_at_previous()
            self.register()
            self._setup()
            self.log(f"supervisor pid {os.getpid()}: starting {len(self.accounts)} account(s)")
            for line in self.previous_died:
                self.log(line)
            for proc in self.services:
                self.spawn(proc)
            self.loop()
        finally:
            self._teardown()
        if self.failure is not None:
            raise SupervisorError(self.failure)
        return self.exit_code()  # from the final report, read in _teardown

    def look_at_previous(self) -> None:
        """A previous supervisor that died without a stop: once its workers are gone, what
        its journals hold, for the first lines and ``supervisor.json``."""
        previous = previous_run.died(self.layout, os.getpid())
        if previous is None:
            return
        previous_run.wait_workers_gone(previous)
        starting = [p.name for p in self.accounts]
        where = self.config or self.layout.path
        self.previous_died = previous_run.lines(previous, self.layout, starting, where)

    def loop(self) -> None:
        while self.failure is None:
            self.handle_signals()
            self.reap()
            if self.failure is not None:
                break
            self.step()
            if self.phase is Phase.DONE:
                break
            self.requests.advance()
            self.pauses.advance()
            self.watch()
            self.advance()
            if self.control is not None:
                self.control.tick()
            self.flush()
            self.wait(self.timeout())

    def step(self) -> None:
        """Move the phase on as far as the children allow."""
        if self.phase is Phase.STARTING_SERVICES and self.services_ready():
            self.launch()
        if self.phase is Phase.RUNNING and not self.pending():
            self.log("no account left running")
            self.phase = Phase.STOPPING_ACCOUNTS
        if self.phase in (Phase.STARTING_SERVICES, Phase.RUNNING):
            self.start_sweeps(self.requests.held_accounts())  # accounts stopped by a request
            return
        for account in self.start_sweeps():
            self.outcome.sweep(account)
        if not live(self.accounts) and not self.sweeps.live():
            if not live(self.services):
                self.phase = Phase.DONE
            else:
                self.stop_services()

    @property
    def accounts(self) -> list[Proc]:
        return [p for p in self.procs if not p.program.service]

    @property
    def services(self) -> list[Proc]:
        return [p for p in self.procs if p.program.service]

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
        self.phase = Phase.RUNNING
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
        """0: nothing of ours is held after the sweeps (the final report), nothing failed
        that no journal tells; else 1 (see :meth:`verdict`)."""
        return self.verdict()[0]

    def verdict(self) -> tuple[int, list[tuple[str, str | None]]]:
        """The exit status and the final lines (:meth:`StopOutcome.verdict`), from the final
        report read in :meth:`_teardown`."""
        return self.outcome.verdict(self.left_open, self.accounts)

    def fail(self, message: str, proc: Proc | None = None) -> None:
        """A service (``proc``) could not start: leave the loop; :meth:`run` raises
        ``message`` with the service's own last error line, and the verdict names it alone
        (the others stopped because of it, not on their own)."""
        if self.failure is None:
            self.failure = message
            self.failed = proc

    def failure_named(self) -> None:
        """Once the failed service's output is read: its error line joins the failure."""
        if self.failure is None:
            return
        said = self.failed.last_error if self.failed is not None else None
        if said and said not in self.failure:
            self.failure = f"{self.failure}: {said}"
        self.outcome.problem(self.failure)

    # --- signals and control requests --------------------------------------------------------

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
        """Queue only, with the time it came; handled in :meth:`handle_signals` (a byte on
        the pipe wakes select)."""
        self.signals.append((signum, time.monotonic()))
        if self.pipes is not None:
            self.pipes.wake()

    def handle_signals(self) -> None:
        while self.signals:
            signum, at = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reap() runs on every turn of the loop
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self.hangup()  # a reload: a terminal hangup never stops trading
            elif self.repeated(signum, at):
                continue
            elif self.stop_request is None:
                self.last_stop_signal = signum, at
                self.begin_stop(name)
            elif signum == signal.SIGINT:  # only a second interactive stop forces
                self.last_stop_signal = signum, at
                self.force(f"{name} again")
            else:
                self.log(
                    f"{name} again while stopping: ignored (Ctrl-C or `multirun stop "
                    "--force` forces)"
                )

    def repeated(self, signum: int, at: float) -> bool:
        """Whether a stop signal that came at ``at`` is the last one taken again (within
        :data:`SAME_SIGNAL_S`): counted once, logged."""
        last = self.last_stop_signal
        if last is None or at - last[1] >= SAME_SIGNAL_S:
            return False
        name, before = signal.Signals(signum).name, signal.Signals(last[0]).name
        again = "again" if signum == last[0] else f"after {before}"
        self.log(
            f"{name} {again} within {SAME_SIGNAL_S:g} s: the same stop, counted once "
            "(Ctrl-C again to force)"
        )
        return True

    def handle(self, conn: Conn, request: dict[str, Any]) -> dict[str, Any] | None:
        """A control request: a reply now, or None (the reply comes once the op is done)."""
        cmd = str(request["cmd"])
        if cmd == "status":
            if request.get("unless") == self.generation:  # the asker's copy is current
                unchanged = {"ok": True, "generation": self.generation, "unchanged": True}
                return {**unchanged, **self.live_status()}
            return {"ok": True, "generation": self.generation, **self.status_data()}
        if cmd == "shutdown":
            if request.get("force"):
                self.begin_stop("multirun stop --force")
                self.force("multirun stop --force")
            elif self.stop_request is None:
                self.begin_stop("multirun stop")
            else:
                self.log("multirun stop: already stopping; waiting for it")
            return {"ok": True, "stopping": True}
        if self.stop_request is not None:
            return error_reply("the supervisor is stopping")
        if self.phase is Phase.STARTING_SERVICES or self.requests.catalog is None:
            return error_reply("the supervisor is still starting; try again in a moment")
        if cmd in PAUSE_COMMANDS:
            return self.pauses.handle(conn, cmd, request)
        return self.requests.handle(conn, cmd, request)

    def hangup(self) -> None:
        """SIGHUP: reload the file the supervisor was started from; the plan is logged."""
        catalog = self.requests.catalog
        starting = self.phase is Phase.STARTING_SERVICES
        if self.stop_request is not None or starting or catalog is None:
            self.log("SIGHUP: no reload while starting or stopping")
            return
        reply = self.requests.reload(None, catalog.path)
        if reply is not None:
            for line in reply.get("lines", []):
                self.log(f"SIGHUP: {line}")
            self.log(f"SIGHUP: {reply.get('error') or 'nothing to apply'}")

    def reply(self, conn: Conn, reply: dict[str, Any]) -> None:
        if self.control is not None:
            self.control.reply(conn, reply)

    def adopt(self, found: Reread) -> None:
        """A reload's spec becomes the running one; its stop and watchdog timeouts apply
        at once, its API keys are masked from now on."""
        assert found.adopt is not None
        found.adopt()
        self.add_secrets(found.secrets)
        if found.stop_timeout_s is not None:
            self.stop_timeout_s = found.stop_timeout_s
        if found.watchdog_timeout_s is not None:
            self.watchdog.timeout_s = found.watchdog_timeout_s
        self.fleet.adopt(found.risk)

    # --- starting children -----------------------------------------------------------------------

    def spawn(self, proc: Proc) -> None:
        what = "sweep started" if self.sweeps.owns(proc) else "started"
        try:
            forked = proc.start(self.fork, self.policy, what=what)
        except ServiceFailed as error:
            self.fail(str(error))
            forked = None
        if forked is not None:
            assert self.pipes is not None
            self.by_pid[forked.pid] = proc
            self.pipes.watch(proc, forked)
        self.save()

    def fork(self, program: Program) -> Forked:
        """Fork ``program``'s child: it is given what every service announced so far, and
        an account its command pipe (the arbiter keeps the write end, non-blocking)."""
        announced = dict(self.announced)
        command_r, command_w = procutil.pipe() if program.announces_up else (-1, -1)
        commands = command_r if command_r >= 0 else None

        def main(ready: Ready) -> int:
            return program.target(ChildContext(program.name, announced, ready, commands))

        try:
            forked = spawn.fork_child(
                program.name,
                main,
                death_signal=program.death_signal,
                death_r=self.death_r,
                handshake=program.ready_timeout_s is not None or program.announces_up,
                hold=self.hold_r,
                commands=command_r,
            )
        except OSError:
            if command_w >= 0:
                os.close(command_w)
            raise
        finally:
            if command_r >= 0:
                os.close(command_r)
        if command_w < 0:
            return forked
        os.set_blocking(command_w, False)
        return dataclasses.replace(forked, commands=command_w)

    def read_ready(self, proc: Proc) -> bool:
        """Read a service's handshake pipe; its first line is what it announces. An
        account's line says it is up (its exit before that is an ordinary crash). True when
        what it read may change what the loop does."""
        assert self.pipes is not None
        if proc.program.announces_up:
            changed = False
            for said in self.pipes.read_lines(proc):
                changed |= self.heard(proc, said)
            return changed
        line = self.pipes.read_ready(proc)
        if line is None:
            return False
        if not line:
            if self.stop_request is None:
                self.fail(f"{proc.program.called} exited before it was ready", proc)
            return True
        self.announced[proc.name] = line
        if proc.state == State.STARTING:
            proc.transition(State.RUNNING)
        self.log(f"{proc.name}: ready at {line} (pid {proc.pid})")
        self.save()
        return True

    def heard(self, proc: Proc, line: str) -> bool:
        """One line of an account's pipe: "up" (RUNNING), its worker's new condition
        (kept in memory: ``status`` and ``health`` get it when no file can be written), or
        its day's P&L and equity (summed against the file's ``risk:`` at once). False only
        for a P&L that crossed no limit: nothing for the loop to do."""
        money = statefiles.read_money(line)
        if money is not None:
            self.fleet.heard(proc.name, *money)
            return self.check_fleet()
        condition = statefiles.read_condition(line)
        if condition is not None:
            proc.worker_state, proc.worker_reason = condition
            self.save()
        elif line and proc.state == State.STARTING:
            proc.transition(State.RUNNING)
            self.save()
        if line == "up" and self.fleet.breach is not None:  # a worker started after a breach
            proc.command(self.fleet.breach.cmd, self.fleet.breach.reason)
        return True

    # --- the fleet limit ---------------------------------------------------------------------

    def check_fleet(self) -> bool:
        """The sum of what the workers said against the file's limits: on a new breach,
        ``on_breach`` to every running account, one log line naming the sum and the limit
        (and ``supervisor.json``'s ``risk.breach``: the ``risk_breach`` alert). True on a
        new breach."""
        breach = self.fleet.check()
        if breach is None:
            return False
        self.log(breach.line())
        self.send_all(breach)
        self.save(now=True)
        return True

    def send_all(self, breach: Breach) -> None:
        for proc in self.accounts:
            if proc.pid is not None and not proc.command(breach.cmd, breach.reason):
                self.log(f"{proc.name}: risk: {breach.cmd} could not be sent", proc.name)

    def end_fleet_days(self, now: float) -> None:
        """At most once a second: accounts paused for the fleet's daily loss of a day that
        is over are resumed (the worker journals the pause, so this holds across restarts)."""
        if now - self.fleet_looked_at < 1.0:
            return
        self.fleet_looked_at = now
        paused = [(p.name, p.worker_reason) for p in self.accounts
                  if p.pid is not None and p.worker_state == State.PAUSED]  # fmt: skip
        for name in self.fleet.stale_day_pauses(paused):
            proc = next(p for p in self.accounts if p.name == name)
            sent = (proc.pid, proc.worker_reason)
            if sent in self.fleet_resumes:
                continue  # sent once to this worker; its answer comes on its pipe
            if proc.command("resume", "a new trading day: the fleet's daily loss counts again"):
                self.fleet_resumes.add(sent)
                self.log(f"{name}: risk: a new trading day: resume", name)

    # --- exits -----------------------------------------------------------------------------------

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
        """A child exited: a sweep's end, a stop asked of it, a service's exit (the run
        stops), or an account's own exit (its Proc decides: finished, FATAL, restart)."""
        proc = self.by_pid.pop(pid, None)
        if proc is None or proc.pid != pid:
            return
        exit = proc.reaped(status)
        proc.close_commands()
        if proc.ready_fd is not None:
            self.read_ready(proc)
        assert self.pipes is not None
        self.pipes.close_ready(proc)  # a grandchild holds it, silent: stop waiting
        self.pipes.drain(proc)  # its last lines, and its last "multirun: error: ..." line
        if self.sweeps.owns(proc):
            account = next(p for p in self.accounts if p.name == proc.name)
            self.sweeps.exited(proc, account, exit)
        elif proc.state == State.STOPPING:
            if not proc.stopped(exit):
                self.outcome.unknown(proc, f"stopped with {exit.description}")
        elif proc.program.service:
            self.service_exited(proc, exit.description)
        else:
            proc.exited_by_itself(exit, self.policy)
        self.save()

    def service_exited(self, proc: Proc, description: str) -> None:
        proc.transition(State.STOPPED)
        if proc is self.failed:
            self.log(f"{proc.name}: exited ({description})")
        elif self.stop_request is not None or self.failure is not None:
            self.log(f"{proc.name}: stopped ({description})")  # by us: not news, nor a cause
        elif proc.program.ready_timeout_s is not None and proc.name not in self.announced:
            self.fail(f"{proc.program.called} exited before it was ready ({description})", proc)
        else:
            self.log(f"{proc.name}: {proc.program.called} exited unexpectedly ({description})")
            self.outcome.problem(f"{proc.program.called} exited unexpectedly ({description})")
            self.begin_stop(f"{proc.name} gone")

    # --- stopping --------------------------------------------------------------------------------

    def begin_stop(self, reason: str) -> None:
        """Stop every account (SIGTERM); the services follow once they are gone."""
        if self.stop_request is not None:
            return
        self.stop_request = StopRequest(reason, time.monotonic() + self.stop_timeout_s)
        if self.phase in (Phase.STARTING_SERVICES, Phase.RUNNING):
            self.phase = Phase.STOPPING_ACCOUNTS
        self.requests.abandon(f"the supervisor is stopping ({reason})")
        self.pauses.abandon(f"the supervisor is stopping ({reason})")
        self.log(
            f"{reason}: stopping {len(live(self.accounts))} account(s) (SIGTERM; SIGKILL after "
            f"{self.stop_timeout_s:g} s; Ctrl-C again to force)"
        )
        for proc in self.accounts:
            if proc.pid is not None:
                proc.transition(State.STOPPING)
                kill(proc.pid, signal.SIGTERM)
            elif proc.state == State.BACKOFF:
                proc.transition(State.STOPPED)
                proc.next_start = None
        self.save(now=True)  # its deadline, for `multirun stop`

    def start_sweeps(self, accounts: Sequence[Proc] | None = None) -> list[Proc]:
        """Sweep each account (of ``accounts``; default all) whose worker is gone and whose
        journal holds trades; the accounts swept."""
        if not self.services_ready() or any(p.state == State.STOPPING for p in self.services):
            return []  # no server to close against: the final report names what is held
        return self.sweeps.start(self.accounts if accounts is None else accounts, self.spawn)

    def stop_deadline(self) -> float | None:
        """Monotonic: when the stop under way ends at the latest, every child gone (the final
        report aside), by the timers it runs on: the workers' SIGKILL, a sweep's deadline
        and grace, the services' stop timeout. None when no stop is under way."""
        if self.phase in (Phase.STARTING_SERVICES, Phase.RUNNING, Phase.DONE):
            return None
        now = time.monotonic()
        if self.phase is Phase.STOPPING_SERVICES:
            return self.services_kill_at if self.services_kill_at is not None else now
        end = max([now, *self.sweeps.moments()])
        running = live(self.accounts)
        if running or self.sweeps.may_start(self.accounts):
            stop = self.stop_request
            kill = [stop.kill_at] if stop is not None and stop.kill_at is not None else []
            kill += [p.stop_deadline for p in running if p.stop_deadline is not None]
            end = max(end, max([now, *kill]) + self.sweeps.budget_s(self.accounts))
        services = [p.program.stop_timeout_s for p in self.services if p.pid is not None]
        return end + max(services, default=0.0)

    def stop_services(self) -> None:
        """Once no account runs: SIGTERM each service (SIGKILL after its stop timeout)."""
        if self.phase is Phase.STOPPING_SERVICES:
            return
        self.phase = Phase.STOPPING_SERVICES
        running = live(self.services)
        timeout = max((p.program.stop_timeout_s for p in running), default=0.0)
        self.services_kill_at = time.monotonic() + timeout
        for proc in running:
            proc.transition(State.STOPPING)
            kill(proc.pid, signal.SIGTERM)

    def kill_services(self, reason: str | None = None) -> None:
        """SIGKILL the services still running (their stop timeout passed, or a forced stop
        with nothing else left to kill: then no SIGTERM follows)."""
        if self.phase is Phase.STOPPING_SERVICES and self.services_kill_at is None:
            return  # they got it already
        self.phase, self.services_kill_at = Phase.STOPPING_SERVICES, None
        for proc in live(self.services):
            why = reason or f"did not stop within {proc.program.stop_timeout_s:g} s"
            self.log(f"{proc.name}: {why}; SIGKILL")
            kill(proc.pid, signal.SIGKILL)

    def force(self, reason: str, *, why: str | None = None) -> None:
        """SIGKILL what the stop waits for: the accounts; else the sweeps; else the services.
        ``why``: what the final lines say of each worker killed (default: ``killed: reason``)."""
        assert self.stop_request is not None
        running = live(self.accounts)
        sweeping = self.sweeps.live()
        if not running and sweeping:
            self.sweeps.abandoned = True
            names = ", ".join(p.name for p in sweeping)
            self.log(f"{reason}: SIGKILL to the sweep of {names} (what is left is listed)")
            for proc in sweeping:
                proc.kill_reason = reason
                kill(proc.pid, signal.SIGKILL)
            return
        if not running:
            self.kill_services(reason)
            return
        self.stop_request.kill_at = None
        self.log(f"{reason}: SIGKILL to {', '.join(p.name for p in running)}")
        why = why or f"killed: {reason}"
        for proc in running:
            self.outcome.kill(proc, why)
            kill(proc.pid, signal.SIGKILL)
        if self.sweeps.procs or any(p.program.sweep for p in running):
            self.log("their journaled trades are swept next; signal again to abandon the sweep")

    # --- the watchdog and timers -------------------------------------------------------------

    def watch(self) -> None:
        """Act on what the heartbeat watchdog found (at most once a second)."""
        after = self.watchdog.kill_after_s
        for found in self.watchdog.check(self.accounts):
            proc, silent = found.proc, f"{found.silent_s:.0f} s"
            if found.action == LATE:
                note = f"no heartbeat for {silent}; SIGKILL in {after:g} s unless it comes back"
                if proc.state != State.STOPPING:
                    proc.transition(State.OVERDUE, note=note)
                self.log(f"{proc.name}: OVERDUE: {note}", proc.name)
            elif found.action == BACK:
                if proc.state == State.OVERDUE:
                    proc.transition(State.RUNNING)
                    proc.note = None
                self.log(f"{proc.name}: heartbeat back; RUNNING", proc.name)
            elif found.action == KILL:
                proc.kill_reason = f"watchdog: no heartbeat for {silent}"
                self.log(f"{proc.name}: no heartbeat for {silent}: SIGKILL", proc.name)
                kill(proc.pid, signal.SIGKILL)
            self.save()

    def advance(self) -> None:
        now = time.monotonic()
        self.requests.overdue_stops(now)
        self.end_fleet_days(now)
        for proc in self.procs:
            if proc.start_timed_out(now):
                handshake = proc.program.ready_timeout_s
                self.fail(f"{proc.program.called} did not start within {handshake:g} s", proc)
            elif proc.settle(now, self.policy):
                self.save()
            elif proc.restart_due(now):
                self.spawn(proc)
        for proc in self.sweeps.late(now):
            if proc.kill_reason is None:
                proc.kill_reason = "past its deadline"
                self.log(f"{proc.name}: the sweep is past its deadline: SIGKILL", proc.name)
                kill(proc.pid, signal.SIGKILL)
        stop = self.stop_request
        if stop and stop.kill_at is not None and now >= stop.kill_at and live(self.accounts):
            names = ", ".join(p.name for p in live(self.accounts))
            timeout = f"stop_timeout ({self.stop_timeout_s:g} s)"
            self.force(f"{timeout} passed for {names}", why=f"killed at {timeout}")
        if self.services_kill_at is not None and now >= self.services_kill_at:
            self.kill_services()

    def timeout(self) -> float:
        now = time.monotonic()
        stop = self.stop_request
        moments = [stop.kill_at] if stop is not None and stop.kill_at is not None else []
        moments += [p.stop_deadline for p in self.accounts if p.pid and p.stop_deadline]
        if self.services_kill_at is not None:
            moments.append(self.services_kill_at)
        if self.dirty:
            moments.append(self.saved_at + SAVE_EVERY_S)
        moments += self.sweeps.moments()
        for proc in self.procs:
            moment = proc.next_moment(self.policy)
            if moment is not None:
                moments.append(moment)
        return max(0.0, min([now + 1.0, *moments]) - now)

    # --- output and state ----------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        """Wait for output, a ready line or a signal (up to ``timeout`` s); route it.

        Output that changes nothing (log lines; a worker's P&L under the fleet's limit) is
        routed and the wait goes on until ``timeout``: a turn of the loop looks at every
        child, and at 50 accounts trading every 5 s such lines came 10-20 times a second
        (with ``risk:``, a third of the supervisor's CPU). A signal, a control request, a
        changed condition or a state to save ends the wait."""
        assert self.pipes is not None
        deadline = time.monotonic() + timeout
        while True:
            changed = False
            for proc, fd in self.pipes.select(max(0.0, deadline - time.monotonic())):
                if fd == proc.ready_fd:
                    changed |= self.read_ready(proc)
                else:
                    self.pipes.read(proc, fd)
            if changed or self.pipes.stirred or self.dirty or time.monotonic() >= deadline:
                return

    def log(self, message: str, account: str | None = None) -> None:
        self.router.event(message, account)

    def add_account(self, proc: Proc) -> None:
        """An account a request or a reload starts that this run did not start with."""
        self.procs.append(proc)
        self.router.add_account(proc.name)

    def add_secrets(self, secrets: Sequence[str]) -> None:
        """A reload's API keys: masked in every line from now on."""
        known = self.router.redact.secrets
        if set(secrets) - set(known):
            self.router.redact = Redactor([*known, *secrets])

    def status_data(self) -> SupervisorFile:
        """The arbiter's view: what ``supervisor.json`` holds, and the control reply's."""
        data: SupervisorFile = {"pid": os.getpid()}
        if self.config is not None:  # an arbiter run on no config file (tests) names none
            data["config"] = self.config
        live = self.live_status()
        data.update(
            {
                "started_utc": stamp(self.started_wall),
                "updated_utc": live["updated_utc"],
                "stopping": self.stop_request is not None,
                "stop_timeout_s": self.stop_timeout_s,
                "stop_deadline_utc": self.deadline_utc(),  # `multirun stop` waits for it
                "announced": dict(self.announced),
                "accounts": {proc.name: proc.to_dict() for proc in self.accounts},
                "services": {proc.name: proc.to_dict() for proc in self.services},
            }
        )
        if "risk" in live:
            data["risk"] = live["risk"]
        if self.previous_died:
            data["previous_died"] = self.previous_died
        return data

    def live_status(self) -> SupervisorFile:
        """What :meth:`status_data` holds that moves with no :meth:`save`: the time it
        was made, and the file-level sums, moved by every P&L line the workers send. An
        "unchanged" status reply carries them too: a kept reply is current but for these."""
        live: SupervisorFile = {"updated_utc": stamp(time.time())}
        if self.fleet.limits is not None or self.fleet.readings:
            live["risk"] = self.fleet.to_dict()
        return live

    def deadline_utc(self) -> str | None:
        """:meth:`stop_deadline` as a UTC time (``supervisor.json``'s ``stop_deadline_utc``)."""
        deadline = self.stop_deadline()
        if deadline is None:
            return None
        return stamp(time.time() + deadline - time.monotonic())

    def save(self, *, now: bool = False) -> None:
        """``state_dir/supervisor.json`` (read by ``multirun status``) is to be rewritten:
        at the end of this loop turn, at most every :data:`SAVE_EVERY_S`; ``now``: at once."""
        self.dirty = True
        self.saves += 1
        if now:
            self.write_status()

    @property
    def generation(self) -> str:
        """Names the state :meth:`save` last marked: a status reply that names it again
        would hold nothing new but :meth:`live_status` (the notifier asks every second
        with ``unless``)."""
        return f"{os.getpid()}.{self.saves}"

    def flush(self) -> None:
        """Once a loop turn: write ``supervisor.json`` if it is behind and its time came."""
        if self.dirty and time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.write_status()

    def write_status(self) -> None:
        """Write ``state_dir/supervisor.json`` (atomic, 0600) now."""
        self.dirty, self.saved_at = False, time.monotonic()
        data = self.status_data()
        with contextlib.suppress(OSError):
            statefiles.write_supervisor(self.layout, data)

    def save_final(self) -> None:
        """The final lines (every trade left open, per account; the accounts that needed a
        sweep; the verdict) and the final save, which ``multirun stop`` prints from."""
        code, lines = self.verdict()
        self.save(now=True)
        data = statefiles.read_supervisor(self.layout)
        data["exit_code"], data["stopped_utc"], data["stopping"] = code, stamp(time.time()), False
        data["stop_deadline_utc"] = None
        data["left_open"] = final_report.to_json(self.left_open)
        data["final_lines"] = [line for line, _account in lines]
        with contextlib.suppress(OSError):
            statefiles.write_supervisor(self.layout, data, compact=False)
        for line, account in lines:
            self.log(line, account)

    def _teardown(self) -> None:
        """Never leave a child behind, whatever happened."""
        self.requests.abandon("the supervisor stopped")
        self.pauses.abandon("the supervisor stopped")
        if self.control is not None:
            self.control.shut()
        for proc in self.accounts:
            proc.close_commands()
        for proc in live(self.all_procs()):
            kill(proc.pid, signal.SIGKILL)
            if proc.program.service and self.failure is None:
                self.outcome.problem(f"{proc.program.called} still running at the end: SIGKILL")
            elif not self.sweeps.owns(proc):  # a sweep's account: its journal tells
                self.outcome.unknown(proc, "still running at the end: SIGKILL")
        if self.pipes is not None:
            for proc in self.all_procs():
                self._wait_gone(proc, 5.0)
        for proc in self.all_procs():
            if proc.state != State.FATAL:
                proc.transition(State.STOPPED)
        self.left_open = {p.name: self.sweeps.final(p) for p in self.accounts if p.program.sweep}
        self.failure_named()
        self.save_final()
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, spawn.default_handler(signum))
        for fd in (self.death_r, self.death_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.pipes is not None:
            self.pipes.shut()
        self.router.close()
        self.unregister()
        self.pidfile.release()

    def register(self) -> None:
        """A record of this run in the host lock directory: ``multirun status`` and
        ``stop`` find it there when the state directory is gone (``rm -rf``)."""
        record: statefiles.SupervisorRecord = {
            "pid": os.getpid(), "config": self.config, "state_dir": str(self.layout.path),
        }  # fmt: skip
        try:
            statefiles.write_supervisor_record(ownership.runtime_dir(), record)
        except (OSError, JournalError) as error:
            self.log(f"cannot register in the host lock directory: {error}")

    def unregister(self) -> None:
        with contextlib.suppress(OSError, JournalError):
            statefiles.supervisor_record(ownership.runtime_dir(), os.getpid()).unlink()

    def _wait_gone(self, proc: Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.pid is not None and time.monotonic() < deadline:
            self.wait(0.05)
            self.reap()
