"""Punctual ticks on a UTC grid, driven by the ``schedule`` library.

A worker with interval ``I`` ticks at every multiple of ``I`` seconds since the
Unix epoch: a ``1m`` account at second :00 of every minute, a ``5m`` one at :00,
:05, ..., a ``5s`` one at seconds divisible by 5.

``schedule`` alone would drift: it computes a job's next run from the moment the
job *finished*. :class:`GridJob` instead advances its due time by exactly one
interval from the grid point it ran for, so a tick that takes time never pushes
the following ones. When a tick overruns (or the machine was suspended), the
missed grid points are collapsed into one catch-up tick, run at once and logged,
never a burst.

Between ticks the loop sleeps (a ``select`` on a self-pipe, woken early by a
stop request) instead of polling, waking at least every ``heartbeat_s`` (a second
by default) to call its ``heartbeat`` (the supervisor's watchdog reads it). The clock
(a :class:`multirun.core.clock.Clock`) is injectable, so tests run without waiting.

Punctuality. The kernel lets a ``select``/``poll`` timeout of ``t`` end up to ``t/1000``
late (its timer slack, 50 us at least, 100 ms at most), so a tick reached by a 1 s wait
starts ~1 ms late. The wait is therefore in two phases: heartbeat-sized waits that end
:data:`FINAL_WAIT_S` before the wake-up, then one short wait whose slack is ~50 us.

Spread. Hundreds of workers on one interval would all wake at the same instant and queue
for the CPU. Each account wakes at a small fixed offset after the grid point
(:func:`wake_offset`: deterministic from its name and the names of the accounts on its
interval, evenly spaced below runner.yaml's ``tick_spread`` (:data:`TICK_SPREAD_S` by
default) and :data:`MAX_OFFSET_FRACTION` of the interval: 250 ms at 1 s, 1.25 s at 5 s,
5 s from 20 s on). The tick still *is for* the grid point (``Tick.due``, the strategy's
``tick_utc``); its ``lateness`` is measured from its scheduled wake-up, grid point plus
offset (``grid_lateness`` includes the offset).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import os
import select
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import schedule

from multirun.core.clock import SYSTEM_CLOCK, Clock, iso_s, utc

log = logging.getLogger("multirun.ticker")

HEARTBEAT_S = 1.0  # the longest idle wait between two heartbeats, unless told otherwise
# The last wait before a tick: short, so its timer slack (0.1% of it, 50 us at least) is
# negligible; long enough to absorb the first phase's slack (<= 1 ms on a 1 s wait).
FINAL_WAIT_S = 0.02
# Below this, a wake-up is due: a float Unix time (~1e9) moves in steps of ~2e-7 s, so
# a wait for less could leave a clock at the same value and the loop spinning.
ROUNDING_S = 1e-6
# An account's wake-up offset after the grid point is below tick_spread (this by default,
# from the schema)... At 60 s the old fixed 250 ms cap queued 500 accounts' ticks for the
# CPU (p99 lateness ~90 ms); spread over 5 s they are 10 ms apart.
TICK_SPREAD_S = 5.0
MAX_OFFSET_FRACTION = 0.25  # ...and below this fraction of its interval


def wake_offset(
    name: str, interval_s: int, peers: Collection[str] = (), spread_s: float = TICK_SPREAD_S
) -> float:
    """The fixed delay after each grid point at which account ``name`` wakes, in seconds.

    Within ``[0, min(spread_s, MAX_OFFSET_FRACTION * interval))`` (``spread_s`` 0: no
    offset), the same on every start and host. ``peers``: the names of every account that
    ticks on this interval, ``name`` among them; they are spaced evenly in name order (200
    accounts at 1 s: 1.25 ms apart). Without them (or ``name`` not among them), a hash of
    the name in whole milliseconds: spread too, but hashes cluster (some accounts in the
    same millisecond), and a cluster of ticks queues for the CPU.
    """
    span = min(spread_s, MAX_OFFSET_FRACTION * interval_s)
    span_ms = int(1000 * span)
    if span_ms <= 0:
        return 0.0
    ordered = sorted(set(peers))
    if name in ordered:
        return round(span * ordered.index(name) / len(ordered), 6)
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % span_ms) / 1000.0


class StopFlag:
    """A stop request that a signal handler may raise safely and a sleeper can wait on.

    A ``threading.Event`` set from a signal handler can deadlock (the handler may
    run while the main thread holds the Event's lock), so this uses a self-pipe:
    ``set`` only assigns an attribute and writes one byte, both safe in a handler.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.set_at: float | None = None  # time.monotonic() of the first request
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def set(self, reason: str = "stop") -> None:
        if self.reason is None:
            self.reason = reason
            self.set_at = time.monotonic()
        # A full pipe already wakes the sleeper; a closed one means we are done.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"x")

    def is_set(self) -> bool:
        return self.reason is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (None: no limit) or until :meth:`set`; True if
        stop was requested."""
        if self.is_set():
            return True
        # PEP 475: select resumes after a signal with the remaining timeout, and a
        # handler calling set() makes the pipe readable, so the wake-up is prompt.
        select.select([self._read_fd], [], [], None if timeout is None else max(0.0, timeout))
        return self.is_set()

    def fileno(self) -> int:
        """The descriptor a request makes readable: a sleeper that also waits on other
        descriptors (the worker's command pipe, :mod:`multirun.account.commands`) selects on it."""
        return self._read_fd

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def grid_ceil(t: float, interval_s: int) -> float:
    """The first grid point at or after ``t``."""
    return math.ceil(t / interval_s) * interval_s


def grid_floor(t: float, interval_s: int) -> float:
    """The last grid point at or before ``t``."""
    return math.floor(t / interval_s) * interval_s


@dataclass(frozen=True)
class Tick:
    """One tick: the grid point it is for, when it actually started, and what it skipped.

    ``offset`` is the account's fixed wake-up delay after the grid point (see
    :func:`wake_offset`); the tick was scheduled to start at ``due + offset``.
    """

    due: float
    started: float
    number: int
    missed: int = 0
    offset: float = 0.0

    @property
    def lateness(self) -> float:
        """How late the tick started after its scheduled wake-up (grid point + offset)."""
        return self.started - self.due - self.offset

    @property
    def grid_lateness(self) -> float:
        """How late the tick started after its grid point (the offset included)."""
        return self.started - self.due

    @property
    def due_utc(self) -> dt.datetime:
        return utc(self.due)


class GridJob(schedule.Job):
    """A ``schedule`` job whose runs stay on the interval's UTC grid."""

    def __init__(self, interval_s: int, scheduler: GridScheduler) -> None:
        super().__init__(interval_s, scheduler)
        self.unit = "seconds"  # for schedule's repr; we compute next runs ourselves
        self.interval_s = interval_s
        self.clock = scheduler.clock
        self.due: float | None = None  # the next grid point to run for
        self.running_due: float | None = None  # the grid point of the tick under way
        self.missed = 0

    @property
    def should_run(self) -> bool:
        return self.due is not None and self.clock.time() >= self.due - ROUNDING_S

    def run(self) -> object:
        self._collapse_missed()
        self.running_due = self.due
        # Advanced before the tick, so what the tick reports as next is the next one.
        self._schedule_next_run()
        assert self.job_func is not None  # set by do() before the job is scheduled
        ret = self.job_func()
        self.last_run = dt.datetime.now()
        return ret

    def _collapse_missed(self) -> None:
        """If whole intervals passed since the due time, run once for the latest one."""
        assert self.due is not None
        now = self.clock.time()
        latest = grid_floor(now, self.interval_s)
        self.missed = max(0, round((latest - self.due) / self.interval_s))
        if self.missed:
            log.warning(
                "missed %d tick(s) from %s (previous tick overran or the process was "
                "suspended): running one catch-up tick for %s",
                self.missed,
                iso_s(self.due),
                iso_s(latest),
            )
            self._set_due(latest)

    def _schedule_next_run(self) -> None:
        # Called by schedule's do() and by run(): the first due time is the next grid
        # point; each later one is exactly one interval after the previous due time,
        # never "now + interval", which would drift by the tick's duration.
        if self.due is None:
            self._set_due(grid_ceil(self.clock.time(), self.interval_s))
        else:
            self._set_due(self.due + self.interval_s)

    def _set_due(self, due: float) -> None:
        self.due = due
        # schedule compares next_run values between jobs; naive UTC keeps them ordered.
        self.next_run = utc(due).replace(tzinfo=None)


class GridScheduler(schedule.Scheduler):
    """A ``schedule`` scheduler whose jobs run on a UTC grid against an injectable clock."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.clock = clock

    def every_grid(self, interval_s: int) -> GridJob:
        return GridJob(interval_s, self)

    @property
    def idle_seconds(self) -> float | None:
        dues = [job.due for job in self.jobs if isinstance(job, GridJob) and job.due is not None]
        return None if not dues else min(dues) - self.clock.time()


class Ticker:
    """Calls ``on_tick(tick)`` at every grid point until ``stop`` is set.

    An exception escaping ``on_tick`` is logged and the schedule continues; the
    worker handles its own failures, this is the last line of defence. With ``account``
    (and its ``peers`` on this interval), each tick starts :func:`wake_offset` after its
    grid point, spread below ``spread_s`` (``offset_s`` sets it directly; neither: no
    offset).
    """

    def __init__(
        self,
        interval_s: int,
        on_tick: Callable[[Tick], None],
        *,
        stop: StopFlag,
        clock: Clock = SYSTEM_CLOCK,
        heartbeat: Callable[[], None] | None = None,
        account: str | None = None,
        peers: Collection[str] = (),
        spread_s: float = TICK_SPREAD_S,
        offset_s: float | None = None,
        final_wait_s: float = FINAL_WAIT_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        if interval_s < 1:
            raise ValueError("interval must be at least 1 second")
        if offset_s is None:
            offset_s = 0.0 if account is None else wake_offset(account, interval_s, peers, spread_s)
        if not 0 <= offset_s < interval_s:
            raise ValueError("the wake-up offset must be within the interval")
        self.interval_s = interval_s
        self.offset_s = offset_s
        self.final_wait_s = final_wait_s  # 0: one-phase waits (bench/tick_lateness' baseline)
        self.stop = stop
        self.clock = clock
        self.ticks = 0
        self.heartbeat = heartbeat or (lambda: None)
        self.heartbeat_s = heartbeat_s  # the longest idle wait between two heartbeats
        self._on_tick = on_tick
        self._scheduler = GridScheduler(clock)
        self._job = self._scheduler.every_grid(interval_s).do(self._fire)

    @property
    def next_due(self) -> float | None:
        """Unix time of the next tick (during a tick: the one after it)."""
        return self._job.due

    def run(self) -> None:
        """Tick until stopped; returns between ticks, never in the middle of one."""
        while not self.stop.is_set():
            idle = self._scheduler.idle_seconds
            wake_in = None if idle is None else idle + self.offset_s
            if wake_in is not None and wake_in > self.final_wait_s:
                # Phase one: end final_wait_s early, so this wait's slack cannot make us late.
                self.heartbeat()
                self.clock.wait(self.stop, min(wake_in - self.final_wait_s, self.heartbeat_s))
                continue
            if wake_in is not None and wake_in > ROUNDING_S:
                self.clock.wait(self.stop, wake_in)  # phase two: short, so (nearly) no slack
                continue
            self._scheduler.run_pending()

    def _fire(self) -> None:
        assert self._job.running_due is not None
        self.ticks += 1
        started = self.clock.time()
        tick = Tick(self._job.running_due, started, self.ticks, self._job.missed, self.offset_s)
        try:
            self._on_tick(tick)
        except Exception as exc:  # keep ticking: the schedule must survive a bad tick
            log.error("tick %d failed: %s: %s", tick.number, type(exc).__name__, exc)
