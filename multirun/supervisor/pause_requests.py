"""``pause``, ``resume`` and ``flatten`` of accounts, as control requests.

A request (``multirun pause/resume/flatten [CONFIG] NAME...|--all``, or the dashboard)
names running accounts; each gets one command line down its worker's command pipe
(:meth:`multirun.supervisor.program.Proc.command`), which the worker acts on between its
ticks (:mod:`multirun.account.commands`) and answers on its own pipe: PAUSED and why, or
RUNNING again. Once every named worker has said so (or the request's deadline passed),
the client gets one reply: each account's state and reason, and for a flatten what its
journal held before and holds now (what it closed, what is still open). The journal is
the ledger: the reply never says a trade closed that it still holds.

A ``resume`` also opens the fleet limit's latch (:meth:`FleetRisk.resumed`): the sum is
watched again from the moment of the resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from multirun.account import final_report
from multirun.account.final_report import Leftover
from multirun.account.worker import OUTSIDE_HOURS
from multirun.core.states import State
from multirun.supervisor.control_server import Conn, error_reply
from multirun.supervisor.program import Log, Proc

COMMANDS = ("pause", "resume", "flatten")
PAUSE_WAIT_S = 60.0  # a worker acts between ticks: a tick under way ends first
LOOK_EVERY_S = 0.25  # a flatten: how often the journals are read for what they hold
OPERATOR = {"pause": "paused by operator", "resume": "resumed by operator"}


@dataclass(eq=False)
class PauseOp:
    """One pause, resume or flatten under way."""

    cmd: str
    conn: Conn
    names: list[str]
    reason: str
    deadline: float  # monotonic
    before: dict[str, Leftover] = field(default_factory=dict)  # flatten: what was held
    flat: set[str] = field(default_factory=set)  # flatten: the accounts found holding nothing
    looked_at: float = 0.0  # flatten: monotonic, the last look at the journals


def operator_reason(cmd: str, now: float) -> str:
    """What the worker is told, and shows: a flatten's names its moment, so that its
    answer is told apart from an earlier one."""
    if cmd == "flatten":
        return f"flattened by operator at {time.strftime('%H:%M:%S', time.gmtime(now))} UTC"
    return OPERATOR[cmd]


class PauseRequests:
    """The pause, resume and flatten requests under way."""

    def __init__(
        self,
        accounts: Callable[[], list[Proc]],
        *,
        log: Log,
        reply: Callable[[Conn, dict[str, Any]], None],
        save: Callable[[], None],
        resumed: Callable[[], None],  # the fleet limit's latch opens
        flatten_wait_s: Callable[[], float],  # the running stop_timeout, plus a margin
    ) -> None:
        self.accounts = accounts
        self.log = log
        self.reply = reply
        self.save = save
        self.resumed = resumed
        self.flatten_wait_s = flatten_wait_s
        self.ops: list[PauseOp] = []

    def handle(self, conn: Conn, cmd: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """An error reply now (one line), or None: the reply comes once the workers answered."""
        procs = {p.name: p for p in self.accounts()}
        names = [str(n) for n in request.get("names") or []]
        if request.get("all"):
            names = [n for n, p in procs.items() if self.serving(p)]
            if not names:
                return error_reply(f"{cmd} --all: no account is running")
        if not names:
            return error_reply(f"{cmd}: name at least one account, or --all")
        unknown = [n for n in names if n not in procs]
        if unknown:
            return error_reply(
                f"{cmd}: no account named {', '.join(unknown)} "
                f"(accounts: {', '.join(sorted(procs)) or 'none'})"
            )
        idle = [n for n in names if not self.serving(procs[n])]
        if idle:
            states = ", ".join(f"{n} ({procs[n].state})" for n in idle)
            return error_reply(
                f"{cmd}: not running: {states}; a pause is kept by the running worker "
                "(start it: it starts paused if it was)"
            )
        now = time.time()
        reason = operator_reason(cmd, now)
        wait = self.flatten_wait_s() if cmd == "flatten" else PAUSE_WAIT_S
        op = PauseOp(cmd, conn, names, reason, time.monotonic() + wait)
        if cmd == "flatten":
            op.before = {n: self.held(procs[n]) for n in names}
        for name in names:
            if not procs[name].command(cmd, reason):
                return error_reply(f"{cmd}: {name}: its command pipe does not take it now")
            self.log(f"{name}: {cmd} asked ({reason})", name)
        if cmd == "resume":
            self.resumed()
        self.ops.append(op)
        return None

    @staticmethod
    def serving(proc: Proc) -> bool:
        """Its worker runs and reads its commands (a stopping one acts on none)."""
        return proc.command_fd is not None and proc.state != State.STOPPING

    @staticmethod
    def held(proc: Proc) -> Leftover:
        """What ``proc``'s journal holds now (read without its lock)."""
        sweep = proc.program.sweep
        return sweep.leftover() if sweep is not None else Leftover(proc.name, "close")

    def done(self, op: PauseOp, proc: Proc | None) -> bool:
        """Whether ``proc``'s worker answered ``op`` (or cannot any more: it is gone). A
        flatten: PAUSED for it (the worker says so before closing) and its journal holding
        nothing (looked at by :meth:`look`)."""
        if proc is None or proc.pid is None:
            return True
        if op.cmd == "resume":  # outside its trading hours it stays PAUSED for that alone
            return proc.worker_state != State.PAUSED or proc.worker_reason == OUTSIDE_HOURS
        if op.cmd == "pause":
            return self.told(op, proc)
        return self.told(op, proc) and proc.name in op.flat

    @staticmethod
    def told(op: PauseOp, proc: Proc) -> bool:
        """Its worker says it is PAUSED for ``op`` (not for an earlier pause, a flatten's)."""
        return proc.worker_state == State.PAUSED and proc.worker_reason == op.reason

    def look(self, op: PauseOp, procs: dict[str, Proc], now: float) -> None:
        """A flatten: every :data:`LOOK_EVERY_S`, the journal of each account that said it
        is flattening (the ledger says when it holds nothing; the worker's pipe does not)."""
        if op.cmd != "flatten" or now - op.looked_at < LOOK_EVERY_S:
            return
        op.looked_at = now
        for name in op.names:
            proc = procs.get(name)
            if proc is not None and name not in op.flat and self.told(op, proc):
                left = self.held(proc)
                if not left.trades and not left.error:
                    op.flat.add(name)

    def advance(self) -> None:
        """Once a loop turn: reply to each op whose workers all answered, or whose time is up."""
        now = time.monotonic()
        procs = {p.name: p for p in self.accounts()}
        for op in list(self.ops):
            self.look(op, procs, now)
            if now >= op.deadline or all(self.done(op, procs.get(n)) for n in op.names):
                self.ops.remove(op)
                self.finish(op, procs)

    def finish(self, op: PauseOp, procs: dict[str, Proc]) -> None:
        report, lines, ok = {}, [], True
        for name in op.names:
            proc = procs.get(name)
            reached = proc is not None and proc.pid is not None and self.done(op, proc)
            state = (proc.worker_state or State.RUNNING) if proc and proc.pid else State.STOPPED
            reason = proc.worker_reason if proc is not None and state == State.PAUSED else None
            line = f"{name}: {state}" + (f" ({reason})" if reason else "")
            if not reached:
                line += f": no answer to {op.cmd} in time" if proc and proc.pid else ": exited"
            lines.append(line)
            entry: dict[str, Any] = {"state": state, "reason": reason, "ok": reached}
            if op.cmd == "flatten" and proc is not None:
                closed, left = self.flattened(op.before.get(name), self.held(proc))
                lines += [f"  closed: {c}" for c in closed]
                lines += [f"  still open: {s}" for s in left]
                if left:
                    lines.append(f"  {name}: {len(left)} still open: it opens nothing; "
                                 f"flatten again, or multirun close {name}")  # fmt: skip
                if not closed and not left:
                    lines.append("  nothing was open")
                entry.update(closed=closed, still_open=left)
                reached = reached and not left
                entry["ok"] = reached
            ok = ok and reached
            report[name] = entry
        self.save()
        reply: dict[str, Any] = {"ok": ok, "accounts": report, "lines": lines}
        if not ok:
            missed = [n for n, r in report.items() if not r["ok"]]
            what = "is not flat and PAUSED" if op.cmd == "flatten" else f"did not {op.cmd}"
            reply["error"] = f"{', '.join(missed)} {what}"
        self.reply(op.conn, reply)

    @staticmethod
    def flattened(before: Leftover | None, after: Leftover) -> tuple[list[str], list[str]]:
        """What the journal held before and holds no more, and what it still holds."""
        if after.error:
            return [], [f"cannot tell: {after.error}"]
        still = {t.order_ref for t in after.trades}
        closed = [final_report.describe(t) for t in (before.trades if before else ())
                  if t.order_ref not in still]  # fmt: skip
        return closed, [final_report.describe(t) for t in after.trades]

    def abandon(self, why: str) -> None:
        """A global stop: every op under way ends with ``why``."""
        for op in list(self.ops):
            self.ops.remove(op)
            self.reply(op.conn, error_reply(why))
