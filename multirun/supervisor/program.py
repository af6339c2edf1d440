"""What the arbiter supervises: programs, and each one's process with its own behaviour.

A :class:`Program` says what a child runs and how it is supervised (an account, or a
service such as the simulator). A :class:`Proc` is that program's process as the arbiter
runs it, one at a time, and, like supervisord's ``Subprocess``, it owns what concerns it
alone: every change of its state (:meth:`Proc.transition`, checked against
:mod:`multirun.core.states`), starting it (:meth:`Proc.start`), its timers (STARTING ->
RUNNING, BACKOFF -> a new start), and what its exit means:

- an exit after the arbiter asked it to stop (:meth:`Proc.stopped`): STOPPED, and whether
  it went as asked (status 0, or the very signal it was sent);
- an account's exit nobody asked for (:meth:`Proc.exited_by_itself`): status 0 is a
  finished worker (not restarted); :data:`~multirun.core.errors.EXIT_FATAL` (78, a
  deterministic failure: its strategy cannot be built, its key is refused, its account
  is traded elsewhere) makes it FATAL at once, its last ``multirun: error: ...`` line the
  reason; anything else is a crash (:meth:`Proc.crashed`), restarted with backoff (1 s,
  2 s, 4 s ... capped; a run of ``stable_s`` resets it) until ``fatal_after`` quick exits
  in a row make it FATAL too.

What an exit means for the whole run (a service gone, a sweep done) is the arbiter's.
:class:`RestartPolicy` holds supervisord's rules for restarts and crash loops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from multirun.account.final_report import Leftover
from multirun.core.clock import iso_ms
from multirun.core.errors import EXIT_FATAL
from multirun.core.redact import LineSplitter
from multirun.core.statefiles import ProcessEntry, command_line
from multirun.core.states import State, allowed
from multirun.supervisor.fork import Forked, Target

SERVICE_STOP_TIMEOUT_S = 5.0


class Log(Protocol):
    """Where a process's supervision events go (the arbiter's log: ``LogRouter.event``)."""

    def __call__(self, message: str, account: str | None = None, /) -> None: ...


class ServiceFailed(Exception):
    """A service could not start: the run ends (the arbiter raises it after its teardown)."""


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child that exited unexpectedly, and when to give up (FATAL)."""

    startsecs: float = 3.0  # a run shorter than this is a failed start
    fatal_after: int = 5  # failed starts in a row -> FATAL
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    stable_s: float = 60.0  # a run this long resets the backoff

    def delay(self, failures: int) -> float:
        """Wait before restart number ``failures`` (1, 2, 4 ... seconds, capped)."""
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Sweep:
    """How to apply an account's ``on_stop`` once its worker is gone: a fresh process that
    loads no strategy code and works from the journal (see :mod:`multirun.supervisor.sweeps`)."""

    target: Target  # the forked child: launch.sweep_from_journal for the account
    leftover: Callable[[], Leftover]  # what its journal holds, read without its lock
    deadline_s: float  # the sweep's own deadline (the arbiter kills it a little later)


@dataclass(frozen=True)
class Program:
    """One child the arbiter runs: what it runs and how it is supervised.

    A service serves the accounts (the simulator): it starts first and, with
    ``ready_timeout_s``, the accounts start once it has written its ready line; it stops
    after them (they close their trades against it); and its unexpected exit ends the
    run, since what it held in memory would not come back with a restart.
    """

    name: str
    target: Target
    service: bool = False  # serves the accounts: first up, last down, its exit ends the run
    ready_timeout_s: float | None = None  # set: the child announces itself (a ready line)
    # An account: its worker says when it is up (start-up reconciliation done); RUNNING
    # then, or after startsecs without a word (a slow server), whichever comes first.
    announces_up: bool = False
    death_signal: int = signal.SIGHUP  # what it gets when the arbiter dies
    stop_timeout_s: float = SERVICE_STOP_TIMEOUT_S  # a service's; accounts use the arbiter's
    title: str = ""  # how messages call it ("the simulator"); its name when empty
    sweep: Sweep | None = None  # an account: how to apply its on_stop without its worker

    @property
    def called(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class Exit:
    """How a process ended, as :meth:`Proc.reaped` recorded it."""

    description: str  # "exit 3", "signal SIGKILL", with the arbiter's reason for a kill
    ok: bool  # exit status 0
    status: int | None  # the exit status; None when a signal ended it
    ran: float  # seconds since its start


@dataclass
class Proc:
    """One supervised child: its process's state and counters, and what happens to it."""

    program: Program
    log: Log = field(repr=False, compare=False)
    state: State = State.STOPPED
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
    kill_reason: str | None = None  # why the arbiter SIGKILLed its current process
    pipes: dict[int, tuple[str, LineSplitter]] = field(default_factory=dict)
    ready_fd: int | None = None  # the handshake pipe, until its line came
    ready_data: bytes = b""
    held: bool = False  # stopped by a command: not restarted, not wound down for
    keep: bool = False  # stopped with SIGHUP (restart --keep): its trades stay, no sweep
    stop_deadline: float | None = None  # monotonic: a per-account stop's SIGKILL moment
    # An account's own condition, as its worker last said on its pipe (its status.json
    # may be unwritable: a full disk); None until it said anything but "up"
    worker_state: str | None = None
    worker_reason: str | None = None
    # An account: the write end of its worker's command pipe, while the worker runs
    command_fd: int | None = None

    @property
    def name(self) -> str:
        return self.program.name

    def command(self, cmd: str, reason: str) -> bool:
        """Write one command line (:func:`~multirun.core.statefiles.command_line`) to its
        worker, never blocking; False when it has no pipe, or the pipe is full or closed."""
        if self.command_fd is None:
            return False
        line = command_line(cmd, reason).encode() + b"\n"
        try:
            return os.write(self.command_fd, line) == len(line)
        except OSError:
            return False

    def close_commands(self) -> None:
        """Its worker is gone (or replaced): close the write end of its command pipe."""
        if self.command_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.command_fd)
            self.command_fd = None

    @property
    def restarts(self) -> int:
        return max(0, self.spawns - 1)

    def transition(self, new: State, *, note: str | None = None) -> None:
        """The one place its state changes (a disallowed move is logged, then made)."""
        if not allowed(self.state, new):
            self.log(f"{self.name}: unexpected state change {self.state} -> {new}", self.name)
        self.state = new
        if note is not None:
            self.note = note

    # --- starting -------------------------------------------------------------------------------

    def start(
        self, fork: Callable[[Program], Forked], policy: RestartPolicy, *, what: str = "started"
    ) -> Forked | None:
        """Fork its process (``fork``: the arbiter's, which knows the pipes); STARTING.

        A failed fork (EAGAIN, ENOMEM) is a failed start of an account, retried with
        backoff (left to propagate, it would end the run and every account with it); a
        service's ends the run: :class:`ServiceFailed`. None when it did not start."""
        self.transition(State.STARTING)
        self.kill_reason, self.stop_deadline = None, None
        self.worker_state, self.worker_reason = None, None
        try:
            forked = fork(self.program)
        except OSError as error:
            self.last_exit = f"fork failed: {error.strerror}"
            if self.program.service:
                message = f"cannot start {self.program.called}: {error.strerror}"
                raise ServiceFailed(message) from None
            self.crashed(self.last_exit, ran=0.0, policy=policy)
            return None
        self.pid = forked.pid
        self.next_start, self.note = None, None
        self.started, self.started_wall = time.monotonic(), time.time()
        self.spawns += 1
        again = f" (restart {self.restarts})" if self.restarts else ""
        self.log(f"{self.name}: {what}, pid {forked.pid}{again}", self.name)
        return forked

    # --- timers ---------------------------------------------------------------------------------

    def start_timed_out(self, now: float) -> bool:
        """A child with a ready handshake (a service) that has not announced itself in time."""
        timeout = self.program.ready_timeout_s
        return (
            self.state == State.STARTING
            and timeout is not None
            and self.pid is not None
            and now - self.started >= timeout
        )

    def settle(self, now: float, policy: RestartPolicy) -> bool:
        """STARTING without a handshake for ``startsecs``: RUNNING (True when it moved)."""
        if (
            self.state == State.STARTING
            and self.program.ready_timeout_s is None
            and now - self.started >= policy.startsecs
        ):
            self.transition(State.RUNNING)
            return True
        return False

    def restart_due(self, now: float) -> bool:
        """In BACKOFF, its delay passed: to be started again."""
        return (
            self.state == State.BACKOFF and self.next_start is not None and now >= self.next_start
        )

    def next_moment(self, policy: RestartPolicy) -> float | None:
        """When one of its timers is next due (monotonic), None when none runs."""
        if self.state == State.STARTING:
            return self.started + (self.program.ready_timeout_s or policy.startsecs)
        if self.state == State.BACKOFF:
            return self.next_start
        return None

    # --- exits ----------------------------------------------------------------------------------

    def reaped(self, status: int) -> Exit:
        """Record that its process exited (``status``: waitpid's); how it ended."""
        description, ok = describe_status(status)
        if self.kill_reason is not None:
            description = f"{description} ({self.kill_reason})"
        ran = time.monotonic() - self.started
        self.pid, self.last_exit = None, description
        return Exit(description, ok, exit_status(status), ran)

    def stopped(self, exit: Exit) -> bool:
        """It exited after the arbiter asked it to stop: STOPPED. Whether it went as asked:
        status 0, or the very signal it was sent (before its handlers were up: nothing to
        undo); a service's way of going does not count."""
        self.transition(State.STOPPED)
        if self.program.service:
            self.log(f"{self.name}: stopped ({exit.description})")
            return True
        if exit.ok or exit.description == ("signal SIGHUP" if self.keep else "signal SIGTERM"):
            self.log(f"{self.name}: stopped", self.name)
            return True
        self.log(f"{self.name}: stopped with {exit.description}", self.name)
        return False

    def exited_by_itself(self, exit: Exit, policy: RestartPolicy) -> None:
        """An account's process exited without being asked: finished (status 0), FATAL
        (exit 78), or crashed."""
        if exit.ok:
            note = "exited by itself (status 0): not restarted"
            self.transition(State.STOPPED, note=note)
            self.log(f"{self.name}: exited with status 0 by itself; not restarted", self.name)
        elif exit.status == EXIT_FATAL:
            self.failed_for_good(exit.description)
        else:
            self.crashed(exit.description, ran=exit.ran, policy=policy)

    def failed_for_good(self, description: str) -> None:
        """Exit 78: a deterministic failure; FATAL at once, its last error the reason."""
        reason = self.last_error or "a deterministic failure (no error line)"
        note = f"{reason} ({description}: not restarted)"
        self.transition(State.FATAL, note=note)
        self.log(f"{self.name}: FATAL: {reason} ({description}); left stopped", self.name)

    def crashed(self, description: str, *, ran: float, policy: RestartPolicy) -> None:
        """An unexpected exit (or a failed fork): BACKOFF and a restart after the policy's
        delay, or FATAL after ``fatal_after`` exits within ``startsecs`` in a row."""
        self.quick_failures = self.quick_failures + 1 if ran < policy.startsecs else 0
        self.failures = 1 if ran >= policy.stable_s else self.failures + 1
        if self.quick_failures >= policy.fatal_after:
            note = (
                f"exited within {policy.startsecs:g} s of its start "
                f"{self.quick_failures} times in a row"
            )
            self.transition(State.FATAL, note=note)
            message = f"{self.name}: FATAL: {note} (last: {description}); left stopped"
            self.log(message, self.name)
            return
        delay = policy.delay(self.failures)
        self.transition(State.BACKOFF)
        self.next_start = time.monotonic() + delay
        self.log(
            f"{self.name}: exited unexpectedly ({description}) after {ran:.1f} s; "
            f"restarting in {delay:g} s",
            self.name,
        )

    # --- state files ----------------------------------------------------------------------------

    def to_dict(self) -> ProcessEntry:
        next_start = None
        if self.state == State.BACKOFF and self.next_start is not None:
            next_start = iso_ms(time.time() + self.next_start - time.monotonic())
        return {
            "state": self.state,
            "pid": self.pid,
            "started_utc": iso_ms(self.started_wall) if self.pid else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "next_start_utc": next_start,
            "note": self.note,
            "worker_state": self.worker_state if self.pid else None,
            "worker_reason": self.worker_reason if self.pid else None,
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


def exit_status(status: int) -> int | None:
    """The exit status in a waitpid status; None when a signal ended the process."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None


def live(procs: Iterable[Proc]) -> list[Proc]:
    """Those of ``procs`` with a process."""
    return [p for p in procs if p.pid is not None]
