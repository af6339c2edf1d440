"""What ``/metrics`` costs: tick lateness and supervisor CPU, scraped every second or not.

    python bench/metrics_cost.py [--accounts 50] [--interval 1] [--window 30] [--json]

Starts an in-process simulator and runs ``multirun start`` (N accounts, strategy
``random``, every ``--interval`` seconds) three times, one after the other:

1. ``off``: no ``metrics:`` (no counters kept, no metrics child);
2. ``on``: ``metrics: {listen: "127.0.0.1:0"}``, never scraped;
3. ``scraped``: the same, and ``/metrics`` fetched every second during the window.

Over ``--window`` seconds, once every account has ticked, it reads the CPU time
(utime + stime, /proc/PID/stat) of the supervisor, of its metrics child, and of the whole
tree, and (``on``, ``scraped``) the tick lateness from the workers' own histograms: the
mean (exact: sum / count) and the p99, interpolated within its bucket as Prometheus'
``histogram_quantile`` does. Prints the figures and the ratios ``scraped / on`` (the
scrape's cost) and ``on / off`` (the counters' cost). Linux only.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.procstat import cpu_ticks, descendants  # noqa: E402
from bench.scale import ACCOUNT  # noqa: E402  (the same accounts as the scale bench)
from multirun.account.telemetry import LATENESS_BUCKETS  # noqa: E402
from multirun.core import procutil, statefiles  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.sim import SimConfig, SimServer  # noqa: E402

HZ = 100  # clock ticks per second (os.sysconf("SC_CLK_TCK") on Linux)


@dataclass
class Figures:
    mode: str
    supervisor_cpu_pct: float  # of one core: the supervisor and its metrics child
    metrics_child_cpu_pct: float
    tree_cpu_pct: float  # every process of the run
    lateness_mean_ms: float | None
    lateness_p99_ms: float | None
    ticks: int
    scrapes: int
    metrics_child_ms_per_scrape: float | None = None  # its CPU over the window / scrapes


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def lateness(layout: StateDir, names: list[str]) -> tuple[list[float], float]:
    """Every account's tick-lateness bucket counts (not cumulative, +Inf last), summed, and
    their sum of seconds."""
    counts, total = [0.0] * (len(LATENESS_BUCKETS) + 1), 0.0
    for name in names:
        data = statefiles.read_metrics(layout.account(name))
        found = (data.get("histograms") or {}).get("tick_lateness_seconds") or {}
        for i, count in enumerate(found.get("counts") or []):
            counts[i] += count
        total += found.get("sum") or 0.0
    return counts, total


def quantile(q: float, counts: list[float]) -> float | None:
    """``histogram_quantile``: linear within the bucket that holds the q-th observation."""
    n = sum(counts)
    if n == 0:
        return None
    rank, seen, lower = q * n, 0.0, 0.0
    for bound, count in zip([*LATENESS_BUCKETS, float("inf")], counts, strict=True):
        if seen + count >= rank and count:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen, lower = seen + count, bound
    return lower


def run(mode: str, url: str, n: int, interval: int, window: float, workdir: Path) -> Figures:
    state = workdir / mode
    metrics = '\nmetrics:\n  listen: "127.0.0.1:0"' if mode != "off" else ""
    config = workdir / f"{mode}.yaml"
    config.write_text(
        f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 30{metrics}\naccounts:\n"
        + "".join(ACCOUNT.format(i=i, interval=interval) for i in range(n))
    )
    layout, names = StateDir(state), [f"acct-{i:03d}" for i in range(n)]
    with (workdir / f"{mode}.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "multirun", "start", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60 + interval
        while not all(
            ((procutil.read_json(layout.account(a).status) or {}).get("ticks") or 0) >= 1
            for a in names
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"metrics_cost: {mode}: the accounts did not all tick")
            time.sleep(0.2)
        announced = (procutil.read_json(layout.supervisor_json) or {}).get("announced") or {}
        url_metrics = str(announced.get("metrics") or "")
        pids = [proc.pid, *descendants(proc.pid)]
        child = next((p for p in pids if comm(p) == "mr:metrics"), None)
        before = {p: cpu_ticks(p) or 0 for p in pids}
        late0, sum0 = lateness(layout, names)
        stop, scrapes = threading.Event(), [0]

        def scrape() -> None:
            while not stop.wait(1.0):
                requests.get(url_metrics, timeout=5).raise_for_status()
                scrapes[0] += 1

        scraper = threading.Thread(target=scrape, daemon=True)
        if mode == "scraped":
            scraper.start()
        began = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - began
        after = {p: cpu_ticks(p) or 0 for p in pids}
        late1, sum1 = lateness(layout, names)
        stop.set()
        if scraper.is_alive():
            scraper.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)

    def pct(which: list[int]) -> float:
        used = sum(after[p] - before[p] for p in which if p in before)
        return round(100.0 * used / HZ / elapsed, 2)

    counts = [b - a for a, b in zip(late0, late1, strict=True)]
    child_ms = None
    if child and scrapes[0]:
        child_ms = round(1000.0 * (after[child] - before[child]) / HZ / scrapes[0], 1)
    ticks = int(sum(counts))
    p99 = quantile(0.99, counts)
    return Figures(
        mode=mode,
        supervisor_cpu_pct=pct([proc.pid, *([child] if child else [])]),
        metrics_child_cpu_pct=pct([child]) if child else 0.0,
        tree_cpu_pct=pct(pids),
        lateness_mean_ms=round(1000 * (sum1 - sum0) / ticks, 3) if ticks else None,
        lateness_p99_ms=None if p99 is None else round(1000 * p99, 3),
        ticks=ticks,
        scrapes=scrapes[0],
        metrics_child_ms_per_scrape=child_ms,
    )


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def report(figures: dict[str, Figures], n: int, interval: int, window: float) -> str:
    off, on, scraped = figures["off"], figures["on"], figures["scraped"]
    lines = [
        f"metrics_cost: {n} accounts every {interval} s, {window:g} s window",
        f"{'':10} {'supervisor CPU %':>17} {'metrics child %':>16} {'tree CPU %':>11} "
        f"{'lateness mean ms':>17} {'p99 ms':>8} {'ticks':>6} {'scrapes':>8}",
    ]
    for f in (off, on, scraped):
        lines.append(
            f"{f.mode:10} {f.supervisor_cpu_pct:17.2f} {f.metrics_child_cpu_pct:16.2f} "
            f"{f.tree_cpu_pct:11.2f} {f.lateness_mean_ms or 0:17.3f} "
            f"{f.lateness_p99_ms or 0:8.3f} {f.ticks:6d} {f.scrapes:8d}"
        )
    lines += [
        f"scraped / on: lateness p99 {ratio(scraped.lateness_p99_ms, on.lateness_p99_ms)}, "
        f"mean {ratio(scraped.lateness_mean_ms, on.lateness_mean_ms)}, supervisor CPU "
        f"{ratio(scraped.supervisor_cpu_pct, on.supervisor_cpu_pct)}, tree CPU "
        f"{ratio(scraped.tree_cpu_pct, on.tree_cpu_pct)}",
        f"on / off: supervisor CPU {ratio(on.supervisor_cpu_pct, off.supervisor_cpu_pct)}, "
        f"tree CPU {ratio(on.tree_cpu_pct, off.tree_cpu_pct)}",
        f"scraped: the metrics child used {scraped.metrics_child_ms_per_scrape} ms of CPU a "
        f"scrape ({scraped.scrapes} scrapes; /proc counts CPU in 1/{HZ} s)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with SimServer(SimConfig(fill_delay_ms=20)) as sim, tempfile.TemporaryDirectory() as tmp:
        for mode in ("off", "on", "scraped"):
            figures[mode] = run(mode, sim.base_url, args.accounts, args.interval, args.window,
                                Path(tmp))  # fmt: skip
    if args.json:
        print(json.dumps({k: asdict(v) for k, v in figures.items()}, indent=1))
    else:
        print(report(figures, args.accounts, args.interval, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
