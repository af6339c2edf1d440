"""How the arbiter stops: SIGTERM to the accounts, sweeps, then the services, and the report.

A stop (a signal, ``multirun stop``, or no account left running) goes in this order:

1. every account's worker gets SIGTERM (finish the tick, apply ``on_stop``), and SIGKILL
   after ``stop_timeout``; an account waiting in BACKOFF is not restarted;
2. once an account's worker is gone, however it went, its journal is read: if it still
   holds trades, a sweep applies ``on_stop`` from it (:mod:`multirun.supervisor.sweeps`);
3. once no worker and no sweep runs, the services (the simulator) get SIGTERM;
4. the final report names every trade left open (:mod:`multirun.supervisor.final_report`).

Signalling again forces the step under way: SIGKILL to the workers (their sweeps still
run), then to the sweeps, then to the services. :class:`Stopping` is a part of
:class:`multirun.supervisor.arbiter.Arbiter`, kept here to keep each module to one job.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from multirun.core import procutil
from multirun.core.clock import iso_ms
from multirun.core.procutil import kill
from multirun.core.statedir import StateDir
from multirun.core.states import State
from multirun.supervisor import final_report
from multirun.supervisor.arbiter_part import ArbiterPart
from multirun.supervisor.final_report import Leftover
from multirun.supervisor.program import Proc, live
from multirun.supervisor.sweeps import Sweeps


class Stopping(ArbiterPart):
    """The arbiter's stopping half (a mixin: ``supervisor.arbiter.Arbiter`` has the rest)."""

    procs: list[Proc]
    layout: StateDir
    stop_timeout_s: float
    stopping: bool
    stop_deadline: float
    killed: bool
    service_deadline: float | None
    services_killed: bool
    clean: bool
    sweeps: Sweeps
    left_open: dict[str, Leftover]

    if TYPE_CHECKING:  # provided by the arbiter and its other parts

        def services_ready(self) -> bool: ...

        def abandon_ops(self, why: str) -> None: ...

    @property
    def accounts(self) -> list[Proc]:
        return [p for p in self.procs if not p.program.service]

    @property
    def services(self) -> list[Proc]:
        return [p for p in self.procs if p.program.service]

    def start_sweeps(self, accounts: Sequence[Proc] | None = None) -> None:
        """Sweep each account (of ``accounts``; default all) whose worker is gone and whose
        journal holds trades."""
        if not self.services_ready() or any(p.state == State.STOPPING for p in self.services):
            return  # no server to close against: the final report names what is held
        for account, left in self.sweeps.due(self.accounts if accounts is None else accounts):
            proc = self.sweeps.add(account)
            assert account.program.sweep is not None
            deadline = account.program.sweep.deadline_s
            self.log(
                f"{account.name}: its journal holds {len(left.trades)} trade(s); applying "
                f"on_stop ({left.on_stop}) from the journal (deadline {deadline:g} s)",
                account.name,
            )
            account.note = "sweeping: applying on_stop from the journal"
            self.spawn(proc)

    def sweep_exited(self, proc: Proc, description: str, ok: bool) -> None:
        """A sweep ended: say what the account's journal holds now (the final report, read
        once everything stopped, stays the authority)."""
        self.transition(proc, State.STOPPED)
        account = next(p for p in self.accounts if p.name == proc.name)
        sweep = account.program.sweep
        held = final_report.summary(sweep.leftover()) if sweep is not None else "unknown"
        if ok:
            account.note = f"swept: {held}"
            self.log(f"{proc.name}: sweep done: {held}", proc.name)
        else:
            why = f"{description}: {proc.last_error}" if proc.last_error else description
            account.note = f"sweep ended with {why}"
            self.log(f"{proc.name}: sweep ended with {why}; {held}", proc.name)

    def begin_stop(self, reason: str) -> None:
        """Stop every account (SIGTERM); the services follow once they are gone."""
        if self.stopping:
            return
        self.stopping = True
        self.abandon_ops(f"the supervisor is stopping ({reason})")
        self.stop_deadline = time.monotonic() + self.stop_timeout_s
        self.log(
            f"{reason}: stopping {len(live(self.accounts))} account(s) (SIGTERM; SIGKILL after "
            f"{self.stop_timeout_s:g} s; Ctrl-C again to force)"
        )
        for proc in self.accounts:
            if proc.pid is not None:
                self.transition(proc, State.STOPPING)
                kill(proc.pid, signal.SIGTERM)
            elif proc.state == State.BACKOFF:
                self.transition(proc, State.STOPPED)
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
            self.transition(proc, State.STOPPING)
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
        """SIGKILL what the stop waits for: the accounts; else the sweeps; else the services."""
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
        self.clean = False
        self.killed = True
        self.log(f"{reason}: SIGKILL to {', '.join(p.name for p in running)}")
        for proc in running:
            kill(proc.pid, signal.SIGKILL)
        if self.sweeps.procs or any(p.program.sweep for p in running):
            self.log("their journaled trades are swept next; signal again to abandon the sweep")

    # --- the final report ------------------------------------------------------------------

    def save_final(self, code: int) -> None:
        """The final lines (every trade left open, per account) and the final save."""
        self.save(now=True)
        data = procutil.read_json(self.layout.supervisor_json) or {}
        data.update(exit_code=code, stopped_utc=iso_ms(time.time()), stopping=False)
        data["left_open"] = final_report.to_json(self.left_open)
        with contextlib.suppress(OSError):
            procutil.write_json_atomic(self.layout.supervisor_json, data)
        for left in self.left_open.values():
            for line in final_report.lines([left]):
                self.log(line, left.account)
        self.log(final_report.verdict(code, self.left_open))
