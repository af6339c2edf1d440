"""Per-account requests: stop, start, restart and reload, as control requests.

A request from the control socket (:mod:`multirun.supervisor.control_server`) or a SIGHUP
becomes an :class:`Op`: accounts to stop first (their ``on_stop`` applies, swept when
their journal still holds trades; ``keep``: SIGHUP, so the worker exits closing nothing
and the next one adopts its trades from the journal), then accounts to start (counters
reset). The arbiter's loop advances every op each turn; once every account is where it
was sent, the client gets one reply: each account's new state, and ``ok`` only if all
reached it.

A reload re-reads the config (through the :class:`Catalog` the launcher provides: the
arbiter never imports config), plans it with :func:`multirun.config.reload_diff.plan` and
applies it: start the added accounts, stop the removed ones, restart only the changed
ones. Every other process is untouched.

:class:`AccountRequests` is the arbiter's: it is built with what it uses of the arbiter
(how to start a process, log, save, reply) and serves only once the arbiter says so
(not while starting or stopping: :meth:`multirun.supervisor.arbiter.Arbiter.handle`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from multirun.account import final_report
from multirun.config.specs import RiskSpec
from multirun.core.errors import MultirunError
from multirun.core.procutil import kill
from multirun.core.states import State
from multirun.supervisor.control_server import Conn, error_reply
from multirun.supervisor.program import Log, Proc, Program
from multirun.supervisor.sweeps import Sweeps


@dataclass(frozen=True)
class Reread:
    """A re-read config: its plan's lines, whether it may apply, and how to adopt it."""

    ok: bool
    lines: list[str]  # the problems (as validate prints them) or the plan
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    adopt: Callable[[], None] | None = None  # make the new spec the running one
    stop_timeout_s: float | None = None  # the new spec's, applied live
    watchdog_timeout_s: float | None = None  # the new spec's, applied live
    secrets: tuple[str, ...] = ()  # the new spec's API keys, masked from now on
    risk: RiskSpec | None = None  # the new spec's file-level money limits, applied live


class Catalog(Protocol):
    """What the arbiter may run: the running config's accounts, built on request."""

    path: str

    def names(self) -> list[str]: ...

    def program(self, name: str) -> Program: ...  # raises MultirunError: cannot start it

    def startable(self, name: str) -> bool: ...  # enabled (and allowed) in the running spec

    def reread(self, path: str) -> Reread: ...


@dataclass(eq=False)
class Op:
    """One command under way."""

    cmd: str
    conn: Conn | None  # None: a SIGHUP's reload, logged only
    names: list[str]
    to_stop: list[str]
    to_start: list[str]
    keep: bool = False
    phase: str = "stop"
    lines: list[str] = field(default_factory=list)
    removed: tuple[str, ...] = ()


class Save(Protocol):
    def __call__(self, *, now: bool = False) -> None: ...


class AccountRequests:
    """The per-account requests under way, and what starts and stops their accounts."""

    def __init__(
        self,
        catalog: Catalog | None,  # None: this arbiter serves no per-account request
        *,
        accounts: Callable[[], list[Proc]],  # the arbiter's accounts, as they are now
        add_account: Callable[[Proc], None],  # one more account for the arbiter
        sweeps: Sweeps,
        spawn: Callable[[Proc], None],  # start a process (the arbiter's)
        log: Log,
        save: Save,  # supervisor.json is behind (now=True: write it at once)
        reply: Callable[[Conn, dict[str, Any]], None],  # to a control client
        stop_timeout_s: Callable[[], float],  # the running stop_timeout (a reload sets it)
        adopt: Callable[[Reread], None],  # make a reload's spec the running one
    ) -> None:
        self.catalog = catalog
        self.accounts = accounts
        self.add_account = add_account
        self.sweeps = sweeps
        self.spawn = spawn
        self.log = log
        self.save = save
        self.reply = reply
        self.stop_timeout_s = stop_timeout_s
        self.adopt = adopt
        self.ops: list[Op] = []
        # accounts a reload stopped without starting again (disabled, or not startable):
        # a later reload that makes them startable starts them (a `stop NAME` keeps them)
        self.reload_stopped: set[str] = set()

    # --- requests ----------------------------------------------------------------------------

    def handle(self, conn: Conn, cmd: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """``reload`` or ``stop``/``start``/``restart`` of named accounts: an error reply
        now, or None (the reply comes once the op is done)."""
        assert self.catalog is not None
        if cmd == "reload":
            return self.reload(
                conn,
                str(request.get("path") or self.catalog.path),
                dry_run=bool(request.get("dry_run")),
            )
        names = [str(n) for n in request.get("names") or []]
        if not names:
            return error_reply(f"{cmd}: name at least one account")
        known = {p.name for p in self.accounts()} | set(self.catalog.names())
        unknown = [n for n in names if n not in known]
        if unknown:
            return error_reply(
                f"{cmd}: no account named {', '.join(unknown)} "
                f"(accounts: {', '.join(sorted(known))})"
            )
        if cmd in ("start", "restart"):
            try:
                for name in names:
                    self.catalog.program(name)
            except MultirunError as error:
                return error_reply(f"{cmd}: {error}")
        to_stop = names if cmd in ("stop", "restart") else []
        to_start = names if cmd in ("start", "restart") else []
        self.reload_stopped -= set(names)  # the operator's word from now on
        self.begin_op(Op(cmd, conn, names, to_stop, to_start, keep=bool(request.get("keep"))))
        return None

    def reload(
        self, conn: Conn | None, path: str, *, dry_run: bool = False
    ) -> dict[str, Any] | None:
        assert self.catalog is not None
        found = self.catalog.reread(path)
        if not found.ok:
            return {**error_reply(f"{path}: not reloaded: nothing changed"), "lines": found.lines}
        if dry_run or found.adopt is None:
            return {"ok": True, "lines": found.lines, "dry_run": dry_run}
        self.adopt(found)
        accounts = self.accounts()
        running = {p.name for p in accounts if p.pid is not None or p.state == State.BACKOFF}
        held = {p.name for p in accounts if p.held}  # stopped by a command: stay so
        to_start = [
            n
            for n in [*found.added, *found.changed]
            if self.catalog.startable(n)
            and (n in running or n not in held or n in self.reload_stopped)
        ]
        changed = [n for n in found.changed if n in running]
        to_stop = [n for n in [*found.removed, *changed] if n in {p.name for p in accounts}]
        self.reload_stopped = (self.reload_stopped | set(to_stop)) - set(to_start)
        names = sorted({*to_stop, *to_start})
        how = "SIGHUP: reload" if conn is None else "reload"
        self.log(f"{how} of {path}: " + "; ".join(found.lines or ["nothing changed"]))
        self.begin_op(
            Op("reload", conn, names, to_stop, to_start, lines=found.lines, removed=found.removed)
        )
        return None

    # --- ops -----------------------------------------------------------------------------------

    def proc_named(self, name: str) -> Proc | None:
        return next((p for p in self.accounts() if p.name == name), None)

    def begin_op(self, op: Op) -> None:
        for name in op.to_stop:
            proc = self.proc_named(name)
            if proc is not None:
                self.stop_one(proc, keep=op.keep, why=op.cmd)
        self.ops.append(op)
        self.save()

    def stop_one(self, proc: Proc, *, keep: bool, why: str) -> None:
        proc.held, proc.keep = True, keep
        if not keep:
            self.sweeps.looked_at.discard(proc.name)  # its journal is looked at once it is gone
        if proc.pid is not None:
            if proc.state != State.STOPPING:
                proc.transition(State.STOPPING)
            proc.stop_deadline = time.monotonic() + self.stop_timeout_s()
            how = "SIGHUP: exit closing nothing" if keep else "SIGTERM: on_stop applies"
            self.log(f"{proc.name}: {why}: stopping ({how})", proc.name)
            kill(proc.pid, signal.SIGHUP if keep else signal.SIGTERM)
        elif proc.state == State.BACKOFF:
            proc.transition(State.STOPPED, note=f"stopped by {why}")
            proc.next_start = None

    def start_one(self, proc: Proc, why: str) -> None:
        if proc.pid is not None:
            return
        proc.held = proc.keep = False
        proc.failures = proc.quick_failures = proc.spawns = 0
        proc.note = None
        self.sweeps.looked_at.discard(proc.name)
        self.log(f"{proc.name}: {why}: starting", proc.name)
        self.spawn(proc)

    def stopped_yet(self, name: str) -> bool:
        proc = self.proc_named(name)
        if proc is None or proc.pid is not None:
            return proc is None
        if proc.keep:
            return True
        sweep = self.sweeps.procs.get(name)
        return name in self.sweeps.looked_at and (sweep is None or sweep.pid is None)

    def advance(self) -> None:
        """Once a loop turn: move each op on; reply to the ones done."""
        for op in list(self.ops):
            if op.phase == "stop" and all(self.stopped_yet(n) for n in op.to_stop):
                for name in op.removed:
                    proc = self.proc_named(name)
                    if proc is not None:
                        proc.note = "removed from the config"
                op.phase = "start"
                for name in op.to_start:
                    self.start_named(name, op.cmd)
            if op.phase == "start" and not any(
                (p := self.proc_named(n)) is not None and p.state == State.STARTING
                for n in op.to_start
            ):
                self.finish(op)

    def start_named(self, name: str, why: str) -> None:
        assert self.catalog is not None
        try:
            program = self.catalog.program(name)
        except MultirunError as error:
            self.log(f"{name}: cannot start: {error}")
            return
        proc = self.proc_named(name)
        if proc is None:
            proc = Proc(program, self.log)
            self.add_account(proc)
        else:
            proc.program = program
        self.start_one(proc, why)

    def finish(self, op: Op) -> None:
        self.ops.remove(op)
        report, ok, lines = {}, True, list(op.lines)
        for name in op.names:
            proc = self.proc_named(name)
            wanted = State.RUNNING if name in op.to_start else State.STOPPED
            state = proc.state if proc is not None else State.STOPPED
            reached = state == wanted
            ok = ok and reached
            pid = proc.pid if proc is not None else None
            report[name] = {"state": state, "pid": pid, "wanted": wanted, "ok": reached}
            extra = f" (pid {pid})" if pid else ""
            note = proc.note if proc is not None and proc.note and not reached else None
            lines.append(f"{name}: {state}{extra}" + (f": {note}" if note else ""))
            if proc is not None and name not in op.to_start and proc.program.sweep:
                lines += final_report.lines([proc.program.sweep.leftover()])  # left open
        self.save(now=True)  # the file says what the reply says when it arrives
        if op.conn is None:
            for line in lines:
                self.log(f"SIGHUP reload: {line}")
            return
        reply: dict[str, Any] = {"ok": ok, "accounts": report, "lines": lines}
        if not ok:
            missed = [n for n, r in report.items() if not r["ok"]]
            reply["error"] = f"{', '.join(missed)} did not reach the state asked for"
        self.reply(op.conn, reply)

    def abandon(self, why: str) -> None:
        """A global stop: every op under way ends with ``why``."""
        for op in list(self.ops):
            self.ops.remove(op)
            if op.conn is not None:
                self.reply(op.conn, error_reply(why))

    def overdue_stops(self, now: float) -> None:
        """A per-account stop past stop_timeout: SIGKILL (its journal is swept after)."""
        for proc in self.accounts():
            deadline = proc.stop_deadline
            if proc.pid is None or deadline is None or now < deadline or proc.kill_reason:
                continue
            proc.kill_reason = f"stop_timeout ({self.stop_timeout_s():g} s) passed"
            self.log(f"{proc.name}: {proc.kill_reason}: SIGKILL", proc.name)
            kill(proc.pid, signal.SIGKILL)

    def held_accounts(self) -> Sequence[Proc]:
        return [p for p in self.accounts() if p.held and not p.keep]
