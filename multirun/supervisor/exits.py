"""How the arbiter takes a child's exit: reap it, classify it, restart it or give up.

An exit is classified in this order (:meth:`Exits.exited`): a sweep's end (reported by
:mod:`multirun.supervisor.stopping`); a child the arbiter was stopping; a service's exit (the run
stops: what it held in memory would not come back); exit status 0 (a finished worker,
not restarted); :data:`~multirun.core.errors.EXIT_FATAL` (78, a deterministic failure: its
strategy cannot be built, its key is refused, its account is traded elsewhere) makes the
account FATAL at once, its last ``multirun: error: ...`` line the reason; anything else
is a crash, restarted with backoff (1 s, 2 s, 4 s ... capped; a run of ``stable_s``
resets it) until ``fatal_after`` quick exits in a row make the account FATAL too.
:class:`Exits` is a part of :class:`multirun.supervisor.arbiter.Arbiter`, kept here to keep each
module to one job.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from multirun.core.errors import EXIT_FATAL
from multirun.core.states import State
from multirun.supervisor.arbiter_part import ArbiterPart
from multirun.supervisor.program import Proc, RestartPolicy, describe_status
from multirun.supervisor.sweeps import Sweeps

if TYPE_CHECKING:
    from multirun.supervisor.pipes import Pipes


def exit_status(status: int) -> int | None:
    """The exit status in a waitpid status; None when a signal ended the process."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None


class Exits(ArbiterPart):
    """The arbiter's exit half (a mixin: ``supervisor.arbiter.Arbiter`` has the rest)."""

    policy: RestartPolicy
    pipes: Pipes | None
    sweeps: Sweeps
    stopping: bool
    clean: bool
    announced: dict[str, str]
    by_pid: dict[int, Proc]

    if TYPE_CHECKING:  # provided by the arbiter and its other parts

        def all_procs(self) -> list[Proc]: ...
        def read_ready(self, proc: Proc) -> None: ...
        def fail(self, message: str) -> None: ...
        def begin_stop(self, reason: str) -> None: ...
        def sweep_exited(self, proc: Proc, description: str, ok: bool) -> None: ...

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
        proc = self.by_pid.pop(pid, None)
        if proc is None or proc.pid != pid:
            return
        description, ok = describe_status(status)
        if proc.kill_reason is not None:
            description = f"{description} ({proc.kill_reason})"
        ran = time.monotonic() - proc.started
        proc.pid, proc.last_exit = None, description
        if proc.ready_fd is not None:
            self.read_ready(proc)
        assert self.pipes is not None
        self.pipes.close_ready(proc)  # a grandchild holds it, silent: stop waiting
        self.pipes.drain(proc)  # its last lines, and its last "multirun: error: ..." line
        if self.sweeps.owns(proc):
            self.sweep_exited(proc, description, ok)
        elif proc.state == State.STOPPING:
            self.stopped(proc, description, ok)
        elif proc.program.service:
            self.service_exited(proc, description)
        elif ok:
            note = "exited by itself (status 0): not restarted"
            self.transition(proc, State.STOPPED, note=note)
            self.log(f"{proc.name}: exited with status 0 by itself; not restarted", proc.name)
        elif exit_status(status) == EXIT_FATAL:
            self.failed_for_good(proc, description)
        else:
            self.crashed(proc, description, ran)
        self.save()

    def service_exited(self, proc: Proc, description: str) -> None:
        self.transition(proc, State.STOPPED)
        if self.stopping:
            self.log(f"{proc.name}: stopped ({description})")
        elif proc.program.ready_timeout_s is not None and proc.name not in self.announced:
            self.fail(f"{proc.program.called} exited before it was ready")
        else:
            self.log(f"{proc.name}: {proc.program.called} exited unexpectedly ({description})")
            self.clean = False
            self.begin_stop(f"{proc.name} gone")

    def stopped(self, proc: Proc, description: str, ok: bool) -> None:
        self.transition(proc, State.STOPPED)
        if proc.program.service:
            self.log(f"{proc.name}: stopped ({description})")
        elif ok or description == ("signal SIGHUP" if proc.keep else "signal SIGTERM"):
            # the signal we sent: stopped before its handlers were up, nothing to undo
            self.log(f"{proc.name}: stopped", proc.name)
        else:
            self.clean = False
            self.log(f"{proc.name}: stopped with {description}", proc.name)

    def failed_for_good(self, proc: Proc, description: str) -> None:
        """Exit 78: a deterministic failure; FATAL at once, its last error the reason."""
        reason = proc.last_error or "a deterministic failure (no error line)"
        note = f"{reason} ({description}: not restarted)"
        self.transition(proc, State.FATAL, note=note)
        self.log(f"{proc.name}: FATAL: {reason} ({description}); left stopped", proc.name)

    def crashed(self, proc: Proc, description: str, ran: float) -> None:
        policy = self.policy
        proc.quick_failures = proc.quick_failures + 1 if ran < policy.startsecs else 0
        proc.failures = 1 if ran >= policy.stable_s else proc.failures + 1
        if proc.quick_failures >= policy.fatal_after:
            note = (
                f"exited within {policy.startsecs:g} s of its start "
                f"{proc.quick_failures} times in a row"
            )
            self.transition(proc, State.FATAL, note=note)
            message = f"{proc.name}: FATAL: {note} (last: {description}); left stopped"
            self.log(message, proc.name)
            return
        delay = policy.delay(proc.failures)
        self.transition(proc, State.BACKOFF)
        proc.next_start = time.monotonic() + delay
        self.log(
            f"{proc.name}: exited unexpectedly ({description}) after {ran:.1f} s; "
            f"restarting in {delay:g} s",
            proc.name,
        )
