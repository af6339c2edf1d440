"""Tick punctuality: multirun's ticker against the seed script's polling loop.

    python bench/tick_lateness.py [--ticks 60] [--interval 1] [--work-ms 200] [--sequential]

Both loops run ``--ticks`` ticks of ``--interval`` seconds whose work (the strategy
and its orders) takes ``--work-ms``: concurrently in two threads by default, one after
the other with ``--sequential``. For each tick we record when it started and compare
it with its grid time:

- ours: :class:`multirun.ticker.Ticker`, the worker's scheduling loop; its grid is
  the interval's UTC grid (a 1 s account ticks at every whole second).
- seed: ALGOGENE's example loop, ``if datetime.utcnow() >= dt + timedelta(seconds=1):
  dt = datetime.utcnow(); work()`` then ``sleep(1)``; its grid is its first tick plus
  whole intervals (the most favourable anchor it could have).

Reported: p50/p99/max lateness of tick starts against the grid, and drift: how far
the last tick's scheduled time slid from ``first + (n - 1) * interval`` (ours schedules
on grid times; the seed schedules on its own start times). Targets for ours: p99 below
10 ms and zero drift. Exit status 0 when met.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multirun.ticker import StopFlag, Tick, Ticker  # after the path fix

TARGET_P99_S = 0.010


@dataclass
class Run:
    name: str
    interval: float
    scheduled: list[float] = field(default_factory=list)  # what the loop meant to start at
    started: list[float] = field(default_factory=list)

    def grid(self) -> list[float]:
        first = self.scheduled[0]
        return [first + k * self.interval for k in range(len(self.started))]

    def lateness(self) -> list[float]:
        return [s - g for s, g in zip(self.started, self.grid(), strict=True)]

    def drift(self) -> float:
        return self.scheduled[-1] - self.grid()[-1]


def run_ours(ticks: int, interval: int, work_s: float) -> Run:
    run = Run("multirun ticker", interval)
    stop = StopFlag()

    def on_tick(tick: Tick) -> None:
        run.scheduled.append(tick.due)
        run.started.append(tick.started)
        time.sleep(work_s)  # the strategy and its orders
        if len(run.started) >= ticks:
            stop.set("done")

    Ticker(interval, on_tick, stop=stop).run()
    stop.close()
    return run


def run_seed(ticks: int, interval: int, work_s: float) -> Run:
    """The seed script's loop, verbatim but for the work and the tick count."""
    run = Run("seed loop (sleep 1 poll)", interval)
    dt = datetime.utcnow() - timedelta(minutes=60)
    while len(run.started) < ticks:
        if datetime.utcnow() >= dt + timedelta(seconds=interval):
            dt = datetime.utcnow()
            now = time.time()
            run.scheduled.append(now)  # the seed schedules from its own start time
            run.started.append(now)
            time.sleep(work_s)
        time.sleep(1)
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def report(run: Run) -> dict[str, float]:
    late = run.lateness()
    stats = {
        "p50": statistics.median(late),
        "p99": percentile(late, 99),
        "max": max(late),
        "drift": run.drift(),
    }
    print(
        f"{run.name:<26} ticks={len(late):<4} p50={stats['p50'] * 1000:9.2f} ms"
        f"  p99={stats['p99'] * 1000:9.2f} ms  max={stats['max'] * 1000:9.2f} ms"
        f"  drift={stats['drift'] * 1000:9.2f} ms"
    )
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--interval", type=int, default=1, help="seconds between ticks")
    parser.add_argument("--work-ms", type=float, default=200.0, help="time each tick works")
    parser.add_argument("--sequential", action="store_true", help="one loop after the other")
    args = parser.parse_args()
    work_s = args.work_ms / 1000
    print(
        f"{args.ticks} ticks every {args.interval} s, {args.work_ms:g} ms of work per tick, "
        f"{'one after the other' if args.sequential else 'both loops concurrently'}"
    )

    results: dict[str, Run] = {}

    def go(name: str, loop: object) -> None:
        results[name] = loop(args.ticks, args.interval, work_s)  # type: ignore[operator]

    jobs = [("ours", run_ours), ("seed", run_seed)]
    if args.sequential:
        for name, loop in jobs:
            go(name, loop)
    else:
        threads = [threading.Thread(target=go, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    ours, seed = report(results["ours"]), report(results["seed"])
    p50_ratio = seed["p50"] / max(ours["p50"], 1e-6)
    p99_ratio = seed["p99"] / max(ours["p99"], 1e-6)
    print(f"ratio seed/ours: p50 x{p50_ratio:,.0f}, p99 x{p99_ratio:,.0f}")
    met = ours["p99"] < TARGET_P99_S and ours["drift"] == 0
    print(f"target (ours p99 < 10 ms, zero drift): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
