"""What the arbiter supervises: programs, their processes' states and counters, restarts.

A :class:`Program` says what a child runs and how it is supervised (an account, or a
service such as the simulator); a :class:`Proc` is the arbiter's record of its process
(state, pid, restarts, last exit); :class:`RestartPolicy` holds supervisord's rules for
restarts and crash loops.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from multirun.core.clock import iso_ms
from multirun.core.redact import LineSplitter
from multirun.core.states import State
from multirun.supervisor.fork import Target

if TYPE_CHECKING:
    from multirun.supervisor.final_report import Leftover

SERVICE_STOP_TIMEOUT_S = 5.0


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

    target: Target  # the forked child: run_sweep for the account
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


@dataclass
class Proc:
    """One supervised child and its counters."""

    program: Program
    state: str = State.STOPPED
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

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def restarts(self) -> int:
        return max(0, self.spawns - 1)

    def to_dict(self) -> dict[str, Any]:
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


def live(procs: Iterable[Proc]) -> list[Proc]:
    """Those of ``procs`` with a process."""
    return [p for p in procs if p.pid is not None]
