"""Run one worker's code in the supervisor before it forks the accounts' workers.

A forked worker shares the supervisor's memory until it writes to a page. CPython 3.11
writes into a function's code object the first times it runs it (the specializing
interpreter's counters and inline caches), and first calls fill module-level caches
(compiled patterns, parsed formats, prepared statements' classes): so every page of code
the supervisor never ran, and every cache it never filled, is copied into each worker
that runs it, once per account. :func:`warm_worker_code` runs that code here first: one
worker built as every worker is (:func:`multirun.account.process.build_worker` over a
real client and journal), run for a few ticks and stopped with its on_stop, against an
in-process simulator on ``127.0.0.1`` (a port the kernel picks), in a temporary state
directory; then the supervisor freezes what it holds
(:func:`multirun.supervisor.launch.preload`) and forks. ``bench/scale.py --against``, 50
accounts, side by side: 10.89 -> 10.07 MiB PSS per account, with each child's own freeze
(:func:`multirun.supervisor.fork._setup`).

Best-effort and invisible: a warm-up that fails or is slow costs memory, never a start.
Its log lines are dropped; its directory (in memory where it can be: a slow disk's
fsyncs do not slow the start) is removed; every thread, socket and file it opened is
closed before the first fork. With a proxy in the environment it is skipped: the
workers' requests then take requests' proxy path, which this one would not, and a proxy
may not reach our loopback simulator.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from multirun import strategies
from multirun.account.journal.store import Journal
from multirun.account.process import build_worker, log_handler, log_level
from multirun.account.ticker import StopFlag
from multirun.api import request_deadline
from multirun.api.client import AlgogeneClient
from multirun.api.http_session import environment_settings
from multirun.config.specs import AccountSpec, RunnerSpec, freeze
from multirun.core.clock import StopSignal
from multirun.core.redact import Secret
from multirun.core.statedir import StateDir
from multirun.strategies.context import StrategyContext

TICKS = 8  # orders opened, confirmed, closed and priced (tests/supervisor/test_warmup.py)
BUDGET_S = 2.0  # a warm-up is ~50 ms; a slow machine stops it early, not the start
MEMORY_DIR = "/dev/shm"
STRATEGY = "random"  # a built-in: no user code runs in the supervisor

log = logging.getLogger(__name__)


def warm_worker_code() -> bool:
    """One worker's start-up and ticks, run here; False when skipped or cut short."""
    from multirun.sim import SimConfig, SimServer  # only a warm-up needs it here

    try:
        with (
            _quiet(),
            _no_thread_left(),
            tempfile.TemporaryDirectory(prefix="multirun-warmup-", dir=_memory_dir()) as tmp,
            SimServer(SimConfig(fill_delay_ms=0)) as sim,
        ):
            if environment_settings(sim.base_url)[0]:
                return False
            return run_a_worker(sim.base_url, Path(tmp), time.monotonic() + BUDGET_S)
    except Exception as error:  # a warm-up never stands in the way of a start
        log.debug("worker warm-up skipped: %s", error)
        return False


def run_a_worker(url: str, state_dir: Path, deadline: float) -> bool:
    """A worker of :data:`STRATEGY` on the server at ``url``, its state in ``state_dir``,
    run as a supervised worker runs (reconciled, ticking, stopped, its on_stop applied)
    for :data:`TICKS` ticks on a clock whose waits take no time, or until ``deadline``
    (monotonic); True when it ran them all and stopped cleanly."""
    spec = AccountSpec(
        name="warmup", user="warmup", api_key=Secret("warmup-key-0123456789"),
        accountid="WARMUP", runmode="livetest", strategy=STRATEGY, instrument="BTCUSD",
        volume=1.0, interval_s=1, params=freeze({"seed": 1}),
    )  # fmt: skip
    runner = RunnerSpec(
        path=state_dir / "runner.yaml", server=url, state_dir=state_dir, accounts=(spec,)
    )
    strategy = strategies.build(strategies.resolve(STRATEGY), spec.params)
    with contextlib.ExitStack() as stack:
        journal = Journal.for_account(StateDir(state_dir).account(spec.name), spec.order_ref_prefix)
        stack.callback(journal.close)
        client = AlgogeneClient(
            url, spec.user, spec.api_key, spec.runmode, spec.accountid,
            connect_timeout=1.0, read_timeout=1.0, read_budget_s=1.0, request_deadline_s=1.0,
        )  # fmt: skip
        stack.callback(client.close)
        stop = StopFlag()
        stack.callback(stop.close)
        ticks = _Counted(strategy, stop, deadline)
        worker = build_worker(runner, spec, client, journal, ticks, stop=stop, clock=_NoWaits())
        code = worker.run()
    return code == 0 and ticks.count == TICKS


class _Counted:
    """The strategy, asking the worker to stop after :data:`TICKS` calls or at the
    deadline."""

    def __init__(self, strategy: Callable[[StrategyContext], object], stop: StopFlag,
                 deadline: float) -> None:  # fmt: skip
        self.strategy, self.stop, self.deadline = strategy, stop, deadline
        self.count = 0

    def __call__(self, context: StrategyContext) -> object:
        self.count += 1
        if self.count >= TICKS or time.monotonic() > self.deadline:
            self.stop.set("warm-up done")
        return self.strategy(context)


class _NoWaits:
    """A clock whose waits take no time: the time they would have taken is added to it."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def time(self) -> float:
        return time.time() + self.skipped

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        if not stop.is_set():
            self.skipped += max(0.0, seconds)
        return stop.is_set()


def _memory_dir() -> str | None:
    """``/dev/shm`` where it can be written to (a file system in memory: the journal's
    fsyncs cost nothing, however slow the disk), else the system's temporary directory."""
    return MEMORY_DIR if os.access(MEMORY_DIR, os.W_OK | os.X_OK) else None


@contextlib.contextmanager
def _no_thread_left() -> Iterator[None]:
    """The client's request watchdog ends with the warm-up (the simulator's threads end
    as it stops): the supervisor forks with no idle thread of the warm-up's."""
    try:
        yield
    finally:
        request_deadline.renew_watchdog()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The warm-up's log lines are formatted as a supervised worker's are (that code
    warms too), into a buffer dropped after: none reaches the supervisor's output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = [log_handler(io.StringIO(), "warmup", stamped=False)]
    root.setLevel(log_level())
    try:
        yield
    finally:
        root.handlers = handlers
        root.setLevel(level)
