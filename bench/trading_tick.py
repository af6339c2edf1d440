"""Wall and CPU time of a trading tick, with the old fixed confirmation polls and the new.

    python bench/trading_tick.py [--ticks 60] [--rounds 3] [--fill-delays 20,0,100] [--json]

A trading tick is a worker tick whose strategy trades: it opens a trade and waits until
opened_trades lists it (``Reconciler.await_listed``), or closes it and waits until
opened_trades no longer does (:func:`multirun.api.confirm.settle`). This bench runs a real
:class:`~multirun.account.worker.Worker` (real client, journal on disk) against the simulator
(``multirun.sim.SimServer`` on 127.0.0.1, port 0, in a forked process so its threads do
not share the worker's interpreter), its strategy alternating BUY and FLAT, ``--ticks``
ticks per schedule per round. Each round runs both schedules back to back, alternating
which goes first, so both see the same machine load:

- ``old``: the polls before issue 14 (``multirun.api.polls.OLD_*``): opened_trades re-read
  every 50 ms until the fill is listed; close confirmation polls after 50 ms, doubling
  to 0.5 s;
- ``new``: the schedules in use: ``multirun.api.polls.LISTED_POLLS`` and ``SETTLE_POLLS``,
  each learning (``multirun.api.polls.Learned``, per worker) how soon the simulator shows a
  fill or a close, so the first read comes about then (at once for the first two).

The listing schedule is passed to the worker (``Timing``); the close confirmation's
to ``client.close_trades(polls=...)`` (the ``old`` runs pass the old schedule; the
``new`` runs pass none: the client's own learned one, as in production).

Prints, per simulator fill delay, p50/p95 wall time and mean CPU (this process: the
worker, its client and journal) of open ticks, close ticks and all trading ticks, the
opened_trades reads per tick, and the new/old ratios. Target (issue 14): p50 wall of a
trading tick at most half the old one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multirun.account.journal.store import Journal  # noqa: E402
from multirun.account.process import build_worker  # noqa: E402
from multirun.account.reconcile import Timing  # noqa: E402
from multirun.account.ticker import StopFlag, Tick  # noqa: E402
from multirun.api import polls  # noqa: E402
from multirun.api.client import AlgogeneClient  # noqa: E402
from multirun.api.polls import Polls, Schedule  # noqa: E402
from multirun.config.specs import AccountSpec, Guardrails, RunnerSpec, freeze  # noqa: E402
from multirun.core.clock import SYSTEM_CLOCK  # noqa: E402
from multirun.core.redact import Secret  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.strategies.context import StrategyContext  # noqa: E402

NAME = "ticky"
DEFAULT_FILL_DELAY_MS = 20.0  # multirun.sim.SimConfig's default, as bench/scale.py runs it


@dataclass(frozen=True)
class Run:
    name: str
    listed: Polls  # Reconciler.await_listed
    settle: Polls | None  # client.close_trades (None: the client's learned default)
    learn: bool  # Timing.learn: await_listed learns how soon fills are listed


OLD = Run("old", polls.OLD_LISTED_POLLS, polls.OLD_SETTLE_POLLS, learn=False)
NEW = Run("new", polls.LISTED_POLLS, None, learn=True)


@dataclass
class Samples:
    """Per kind of tick ("open", "close"): wall seconds, CPU seconds, listing reads."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {"open": [], "close": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"open": [], "close": []})
    reads: dict[str, list[int]] = field(default_factory=lambda: {"open": [], "close": []})

    def extend(self, other: Samples) -> None:
        for kind in ("open", "close"):
            self.wall[kind] += other.wall[kind]
            self.cpu[kind] += other.cpu[kind]
            self.reads[kind] += other.reads[kind]


# --- the simulator, in its own process ---------------------------------------------------


def _serve(fill_delay_ms: float, conn: Connection) -> None:
    from multirun.sim import SimConfig, SimServer

    with SimServer(SimConfig(fill_delay_ms=fill_delay_ms)) as sim:
        conn.send(sim.base_url)
        signal.sigwait({signal.SIGTERM})


@contextlib.contextmanager
def simulator(fill_delay_ms: float) -> Iterator[str]:
    """The base URL of a simulator running in a child process."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the child waits for it
    try:
        process = ctx.Process(target=_serve, args=(fill_delay_ms, child), daemon=True)
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        if not parent.poll(30):
            raise RuntimeError("the simulator did not start within 30 s")
        yield str(parent.recv())
    finally:
        process.terminate()
        process.join(10)


# --- one worker ----------------------------------------------------------------------


class Alternate:
    """The strategy: BUY when flat, FLAT when long, so every tick trades."""

    def __call__(self, ctx: StrategyContext) -> str:
        return "FLAT" if ctx.open_trades else "BUY"


class CountingClient(AlgogeneClient):
    """The client, counting opened_trades reads (each a request); its close
    confirmations follow :attr:`settle_polls` (None: the client's default)."""

    reads = 0
    settle_polls: Schedule | None = None

    def close_trades(self, trade_ids: Any, *, confirm_timeout_s: float = 10.0,
                     polls: Schedule | None = None,
                     order_ref: str | None = None) -> None:  # fmt: skip
        super().close_trades(trade_ids, confirm_timeout_s=confirm_timeout_s,
                             polls=polls or self.settle_polls, order_ref=order_ref)  # fmt: skip

    def _read(self, endpoint: str, *args: Any, **kwargs: Any) -> Any:
        if endpoint == "opened_trades":
            self.reads += 1
        return super()._read(endpoint, *args, **kwargs)


def run_worker(base_url: str, state_dir: Path, schedule: Run, ticks: int) -> Samples:
    """``ticks`` trading ticks of a fresh worker on ``schedule``."""
    spec = AccountSpec(
        name=NAME, user="alice", api_key=Secret("alice-key"), accountid="ACC-1",
        runmode="livetest", strategy="alternate", instrument="BTCUSD", volume=1.0,
        interval_s=1, params=freeze({}),
        guardrails=Guardrails(max_orders_per_hour=1_000_000, max_open_trades=10),
    )  # fmt: skip
    runner = RunnerSpec(
        path=state_dir / "runner.yaml", server=base_url, state_dir=state_dir, accounts=(spec,)
    )
    client = CountingClient(base_url, spec.user, spec.api_key, spec.runmode, spec.accountid)
    client.settle_polls = schedule.settle
    journal = Journal.for_account(StateDir(state_dir).account(NAME), spec.order_ref_prefix)
    worker = build_worker(
        runner, spec, client, journal, Alternate(), stop=StopFlag(),
        timing=Timing(listed_polls=schedule.listed, learn=schedule.learn), clock=SYSTEM_CLOCK,
    )  # fmt: skip
    samples = Samples()
    try:
        worker.reconcile()
        for number in range(1, ticks + 1):
            kind = "close" if worker.journal.held() else "open"
            reads_before = client.reads
            now = time.time()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            worker.tick(Tick(now, now, number))
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if worker.failures:
                raise RuntimeError(f"tick {number} failed: {worker.last_error}")
            samples.wall[kind].append(wall)
            samples.cpu[kind].append(cpu)
            samples.reads[kind].append(client.reads - reads_before)
    finally:
        if worker.journal.held():
            client.close_trades([r.trade_id for r in worker.journal.held() if r.trade_id])
        journal.close()
        client.close()
        worker.stop.close()
    return samples


# --- report --------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: Samples) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind in ("open", "close", "all"):
        kinds = ("open", "close") if kind == "all" else (kind,)
        wall = [w for k in kinds for w in samples.wall[k]]
        cpu = [c for k in kinds for c in samples.cpu[k]]
        reads = [r for k in kinds for r in samples.reads[k]]
        out[kind] = {
            "n": len(wall),
            "p50_ms": 1000 * statistics.median(wall),
            "p95_ms": 1000 * pct(wall, 0.95),
            "cpu_ms": 1000 * statistics.mean(cpu),
            "reads": statistics.mean(reads),
        }
    return out


def measure(fill_delay_ms: float, ticks: int, rounds: int) -> dict[str, Any]:
    totals = {OLD.name: Samples(), NEW.name: Samples()}
    with simulator(fill_delay_ms) as base_url, tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = (OLD, NEW) if r % 2 == 0 else (NEW, OLD)
            for schedule in order:
                state = Path(tmp) / f"{schedule.name}-{r}"
                totals[schedule.name].extend(run_worker(base_url, state, schedule, ticks))
    result = {name: summary(s) for name, s in totals.items()}
    result["ratio"] = {
        kind: {
            key: result["new"][kind][key] / result["old"][kind][key]
            for key in ("p50_ms", "p95_ms", "cpu_ms")
        }
        for kind in ("open", "close", "all")
    }
    return result


def print_table(fill_delay_ms: float, result: dict[str, Any]) -> None:
    print(f"\nsimulator fill_delay_ms={fill_delay_ms:g}")
    head = f"{'tick':6} {'n':>4} | {'p50 ms old':>10} {'new':>7} {'ratio':>6} |"
    head += f" {'p95 ms old':>10} {'new':>7} {'ratio':>6} | {'CPU ms old':>10} {'new':>6}"
    head += f" {'ratio':>6} | {'reads old':>9} {'new':>5}"
    print(head)
    for kind in ("open", "close", "all"):
        old, new, ratio = result["old"][kind], result["new"][kind], result["ratio"][kind]
        print(
            f"{kind:6} {int(new['n']):>4} | {old['p50_ms']:>10.1f} {new['p50_ms']:>7.1f} "
            f"{ratio['p50_ms']:>6.2f} | {old['p95_ms']:>10.1f} {new['p95_ms']:>7.1f} "
            f"{ratio['p95_ms']:>6.2f} | {old['cpu_ms']:>10.2f} {new['cpu_ms']:>6.2f} "
            f"{ratio['cpu_ms']:>6.2f} | {old['reads']:>9.2f} {new['reads']:>5.2f}"
        )
    ratio = result["ratio"]["all"]["p50_ms"]
    if fill_delay_ms == DEFAULT_FILL_DELAY_MS:
        verdict = "met" if ratio <= 0.5 else "NOT met"
        print(f"target (issue 14): trading tick p50 new/old <= 0.50: {ratio:.2f} ({verdict})")
    else:
        print(f"trading tick p50 new/old: {ratio:.2f} (the target is at the default fill delay)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=60, help="trading ticks per run")
    parser.add_argument("--rounds", type=int, default=3, help="old/new pairs of runs")
    parser.add_argument("--fill-delays", default="20,0,100", help="simulator fill delays (ms)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.fill_delays.split(",") if d.strip()]
    table = io.StringIO()
    with contextlib.redirect_stdout(table if args.json else sys.stdout):
        results = run(delays, args.ticks, args.rounds)
    if args.json:
        print(json.dumps({**results, "table": table.getvalue().strip()}, indent=2))
    return 0


def run(delays: list[float], ticks: int, rounds: int) -> dict[str, Any]:
    """Old and new schedules at each fill delay; prints each table, returns the figures."""
    results = {}
    print(f"trading ticks: {ticks} per run, {rounds} old/new rounds, pid {os.getpid()}")
    for delay in delays:
        results[f"{delay:g}"] = result = measure(delay, ticks, rounds)
        print_table(delay, result)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
