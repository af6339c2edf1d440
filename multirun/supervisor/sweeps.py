"""Sweeps: a stopping supervisor applies ``on_stop`` for accounts whose worker is gone.

Whenever the supervisor stops (a stop request, or no account left running), every
account whose worker is gone, however it went (exited, crashed, SIGKILLed at
``stop_timeout`` or by the watchdog, waiting in BACKOFF, FATAL, never started), and whose
journal still holds trades gets a sweep: a forked child running
``account.process.run_sweep``, which loads no strategy code, reconciles the journal with
the server and applies ``on_stop`` (close: until its deadline). The services (the
simulator) stop only after the sweeps; a second Ctrl-C during a sweep kills it, and the
final report (:mod:`multirun.account.final_report`) names what is left.

:class:`Sweeps` is the arbiter's record of them: which accounts were looked at, the sweep
processes and their deadlines; it starts each sweep due (:meth:`Sweeps.start`) and says
what its end left (:meth:`Sweeps.exited`). Each account is swept at most once per
supervisor run.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable

from multirun.account import final_report
from multirun.account.final_report import CLOSE, Leftover, unchanged
from multirun.core.states import State
from multirun.supervisor.program import Exit, Proc, Program

SWEEP_GRACE_S = 10.0  # past its own deadline, a sweep is SIGKILLed


def needs_sweep(left: Leftover) -> bool:
    """Whether a sweep has something to do: trades to close, or orders to resolve."""
    if left.error:
        return True  # the sweep opens the journal itself, and says what it finds
    unresolved = any(t.trade_id is None for t in left.trades)
    return unresolved or (left.on_stop == CLOSE and bool(left.trades))


class Sweeps:
    """The sweeps of one supervisor run."""

    def __init__(self) -> None:
        self.procs: dict[str, Proc] = {}  # account name -> its sweep's process
        self.looked_at: set[str] = set()
        self.deadlines: dict[str, float] = {}  # monotonic: SIGKILL after this
        self.abandoned = False  # a forced stop killed them: no more sweeps
        # account name -> (its worker's start, what its journal held once that worker
        # was gone): the final report reuses it when nothing ran on the account since
        self.read: dict[str, tuple[float, Leftover]] = {}

    def due(self, accounts: Iterable[Proc]) -> list[tuple[Proc, Leftover]]:
        """Accounts whose worker is gone and whose journal holds trades, each once."""
        found = []
        for account in accounts:
            sweep = account.program.sweep
            if (
                self.abandoned
                or sweep is None
                or account.pid is not None
                or account.state == State.BACKOFF
                or account.name in self.looked_at
            ):
                continue
            self.looked_at.add(account.name)
            left = sweep.leftover()
            self.read[account.name] = (account.started, left)
            if needs_sweep(left):
                found.append((account, left))
        return found

    def final(self, account: Proc) -> Leftover:
        """What ``account``'s journal holds, for the final report: the read made when its
        worker was gone, if no process ran on the account since (no sweep, no restart)
        and its files are unchanged (nothing else, e.g. ``multirun close``, wrote it);
        else read now. At 500 accounts a second read of each cost the stop ~0.5 s."""
        sweep = account.program.sweep
        assert sweep is not None
        cached = self.read.get(account.name)
        if (
            cached is not None
            and cached[0] == account.started
            and account.pid is None
            and account.name not in self.procs
            and unchanged(cached[1])
        ):
            return cached[1]
        return sweep.leftover()

    def add(self, account: Proc) -> Proc:
        """The sweep process (not started yet) of ``account``."""
        sweep = account.program.sweep
        assert sweep is not None
        title = f"the sweep of {account.name}"
        # SIGTERM ends a sweep at once, reporting what is left: a dead arbiter leaves none.
        program = Program(account.name, sweep.target, death_signal=signal.SIGTERM, title=title)
        proc = Proc(program, account.log)
        self.procs[account.name] = proc
        self.deadlines[account.name] = time.monotonic() + sweep.deadline_s + SWEEP_GRACE_S
        return proc

    def start(self, accounts: Iterable[Proc], spawn: Callable[[Proc], None]) -> list[Proc]:
        """Start (with ``spawn``, the arbiter's) the sweep of each of ``accounts`` whose
        worker is gone and whose journal holds trades; the accounts swept."""
        started = []
        for account, left in self.due(accounts):
            proc = self.add(account)
            assert account.program.sweep is not None
            deadline = account.program.sweep.deadline_s
            account.log(
                f"{account.name}: its journal holds {len(left.trades)} trade(s); applying "
                f"on_stop ({left.on_stop}) from the journal (deadline {deadline:g} s)",
                account.name,
            )
            account.note = "sweeping: applying on_stop from the journal"
            spawn(proc)
            started.append(account)
        return started

    def exited(self, proc: Proc, account: Proc, exit: Exit) -> None:
        """``account``'s sweep ended: say what its journal holds now (the final report,
        read once everything stopped, stays the authority)."""
        proc.transition(State.STOPPED)
        sweep = account.program.sweep
        held = final_report.summary(sweep.leftover()) if sweep is not None else "unknown"
        if exit.ok:
            account.note = f"swept: {held}"
            proc.log(f"{proc.name}: sweep done: {held}", proc.name)
        else:
            description = exit.description
            why = f"{description}: {proc.last_error}" if proc.last_error else description
            account.note = f"sweep ended with {why}"
            proc.log(f"{proc.name}: sweep ended with {why}; {held}", proc.name)

    def owns(self, proc: Proc) -> bool:
        return self.procs.get(proc.name) is proc

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.pid is not None]

    def late(self, now: float) -> list[Proc]:
        """Sweeps past their deadline and grace, still running."""
        return [p for p in self.live() if now >= self.deadlines.get(p.name, float("inf"))]

    def moments(self) -> list[float]:
        return [self.deadlines[p.name] for p in self.live() if p.name in self.deadlines]

    def budget_s(self, accounts: Iterable[Proc]) -> float:
        """The longest a sweep of one of ``accounts`` started now may run: its deadline and
        the grace past it (0 when none has a sweep, or a forced stop abandoned them)."""
        deadlines = [a.program.sweep.deadline_s for a in accounts if a.program.sweep]
        return 0.0 if not deadlines or self.abandoned else max(deadlines) + SWEEP_GRACE_S

    def may_start(self, accounts: Iterable[Proc]) -> bool:
        """Whether a sweep of one of ``accounts`` may still start (its journal not read yet)."""
        return not self.abandoned and any(
            a.program.sweep is not None and a.name not in self.looked_at for a in accounts
        )
