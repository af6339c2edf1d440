"""The heartbeat watchdog: a worker that stopped showing signs of life is OVERDUE, then killed.

A worker's main thread touches its heartbeat file
(:attr:`multirun.core.statedir.AccountDir.heartbeat`) at least every second while idle, and
around every tick, strategy call and HTTP request (at most every half second). As
gunicorn's arbiter does with its workers' temporary files, the supervisor reads the
file's mtime (at most once a second):

- no sign of life for ``timeout_s``: the account is OVERDUE (``multirun status`` shows it);
- still none ``kill_after_s`` later: SIGKILL, and a restart as after a crash (the new
  worker adopts the journaled trades); during a stop, a sweep closes them instead;
- a heartbeat that comes back before the kill makes it RUNNING again.

A worker is watched from its start (a heartbeat older than the process counts from the
start), but only once its heartbeat file exists: a worker that never creates one (an older
version) is not watched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from multirun.core.statedir import StateDir
from multirun.core.states import State
from multirun.supervisor.program import Proc

KILL_AFTER_S = 10.0  # OVERDUE this long, still silent: SIGKILL
CHECK_EVERY_S = 1.0

# What the watchdog asks of the arbiter for one process.
LATE, BACK, KILL = "late", "back", "kill"
WATCHED = (State.RUNNING, State.OVERDUE, State.STOPPING)


@dataclass(frozen=True)
class Finding:
    proc: Proc
    action: str  # LATE (make it OVERDUE), BACK (RUNNING again), KILL
    silent_s: float  # seconds since its last heartbeat


class HeartbeatWatchdog:
    """Reads the heartbeats of the accounts' workers; says who is late, back, or to kill."""

    def __init__(
        self,
        layout: StateDir,
        timeout_s: float | None,
        *,
        kill_after_s: float | None = None,  # None: KILL_AFTER_S
        check_every_s: float = CHECK_EVERY_S,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.timeout_s = timeout_s  # None: not watching
        self.kill_after_s = KILL_AFTER_S if kill_after_s is None else kill_after_s
        self.check_every_s = check_every_s
        self.wall, self.monotonic = wall, monotonic
        self.last_check = float("-inf")
        self.late_since: dict[int, float] = {}  # pid -> monotonic time it became late
        # account name -> its heartbeat's path: built once, stat'ed every second
        self._paths: dict[str, str] = {}

    def silence(self, proc: Proc) -> float | None:
        """Seconds since ``proc``'s last heartbeat (or its start), None when not watched."""
        if proc.pid is None or proc.started_wall is None:
            return None
        path = self._paths.get(proc.name)
        if path is None:
            path = self._paths[proc.name] = os.fspath(self.layout.account(proc.name).heartbeat)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None  # never created: an older worker, not watched
        return max(0.0, self.wall() - max(mtime, proc.started_wall))

    def check(self, procs: Iterable[Proc]) -> list[Finding]:
        """What to do about each watched process; at most once every ``check_every_s``."""
        now = self.monotonic()
        if self.timeout_s is None or now - self.last_check < self.check_every_s:
            return []
        self.last_check = now
        findings = []
        for proc in procs:
            if proc.state not in WATCHED or proc.pid is None:
                continue
            silent = self.silence(proc)
            if silent is None:
                continue
            late_at = self.late_since.get(proc.pid)
            if silent < self.timeout_s:
                if late_at is not None:
                    del self.late_since[proc.pid]
                    findings.append(Finding(proc, BACK, silent))
            elif late_at is None:
                self.late_since[proc.pid] = now
                findings.append(Finding(proc, LATE, silent))
            elif now - late_at >= self.kill_after_s:
                del self.late_since[proc.pid]
                findings.append(Finding(proc, KILL, silent))
        return findings

    def next_check(self) -> float | None:
        """When the next check is due (monotonic), None when not watching."""
        return None if self.timeout_s is None else self.last_check + self.check_every_s
