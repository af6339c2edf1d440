"""A deployed fleet trading every tick: ticks run, tick lateness, start and stop times.

    python bench/fleet.py [--accounts 300] [--interval 1] [--window 20] [--reps 1]
                          [--tick-spread S] [--tree DIR] [--json]

Starts ``multirun sim`` (20 ms fills) as its own process and ``multirun start`` of N
accounts trading the built-in ``random`` strategy every ``--interval`` seconds (a close
and an open on two ticks in three, everything confirmed and journaled), metrics on (the
workers' ``metrics.bin``: their tick counts and lateness histograms). Measures:

- **all RUNNING**: from ``multirun start`` until every account is RUNNING in
  ``supervisor.json`` (the supervisor's view: the worker said it is up, or ``startsecs``
  passed) *and* every worker reconciled with the server and scheduled its first tick (its
  ``status.json`` names its next tick: it has a session, its journal and the server's
  listings agree). Also shown: until every worker wrote its first ``status.json`` (it
  says RUNNING from the start of its run, before any request: what this bench measured
  before), and the CPU each part of the tree spent until all RUNNING (the simulator, the
  supervisor, the workers summed) with the requests the simulator served per account;
- over ``--window`` seconds once every worker ticked: **ticks run** (the workers'
  ``ticks_total`` over N * window / interval due: a tick that overran collapses the ones
  it missed into one), **tick lateness** p50 / p99 (from the start scheduled for the tick,
  its grid point plus the account's wake-up offset; interpolated within the histogram's
  buckets, 5, 10, 25, 50, 100 ms..., as Prometheus' ``histogram_quantile``), and the CPU of
  the whole tree, simulator included (% of one core);
- **stopped**: SIGTERM to every process gone (each worker closing what it holds).

``--window 0``: start and stop only (every worker RUNNING, then SIGTERM at once).

Prints the median [min-max] over ``--reps``. Linux only. The machine's other load counts:
say so beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_ticks  # noqa: E402
from bench.scale import ACCOUNT, start_sim, stop_and_time, tree, wait_for  # noqa: E402
from multirun.core import procutil, statefiles  # noqa: E402
from multirun.core.statedir import AccountDir, StateDir  # noqa: E402


@dataclass
class Run:
    up_s: float  # every account RUNNING (supervisor.json) and reconciled (status.json)
    ticks_run_pct: float
    p50_ms: float
    p99_ms: float
    cpu_pct: float  # the whole tree, simulator included
    stop_s: float
    status_s: float = 0.0  # every worker wrote its first status.json (before any request)
    start_cpu: dict[str, float] = field(default_factory=dict)  # CPU s until all RUNNING
    start_requests: float = 0.0  # the simulator's requests per account until all RUNNING


class StartWatch:
    """When a fleet is all RUNNING (see the module docstring), read cheaply: each
    status file only until it said what is awaited, and only when it changed (500 files
    parsed every poll would take a good share of a core from the fleet it measures)."""

    def __init__(self, layout: StateDir, names: list[str], began: float) -> None:
        self.layout = layout
        self.began = began
        self.unwritten = {name: layout.account(name).status for name in names}
        self.unscheduled = dict(self.unwritten)
        self.n = len(names)
        self.status_s: float | None = None
        self.read_at: dict[str, tuple[int, int, int]] = {}  # each file's, when last parsed

    def up(self) -> bool:
        """Every worker reconciled and scheduled, and every account RUNNING."""
        now = time.monotonic() - self.began
        for name, path in list(self.unwritten.items()):
            if path.exists():
                del self.unwritten[name]
        if not self.unwritten and self.status_s is None:
            self.status_s = now
        for name, path in list(self.unscheduled.items()):
            try:
                seen = path.stat()
            except OSError:
                continue
            # the inode too: each write is a new file renamed over (mtime is coarse)
            stamp = (seen.st_ino, seen.st_mtime_ns, seen.st_size)
            if stamp == self.read_at.get(name):
                continue  # unchanged since read: not parsed again
            self.read_at[name] = stamp
            if (procutil.read_json(path) or {}).get("next_tick_utc"):
                del self.unscheduled[name]
        if self.unscheduled:
            return False
        found = (procutil.read_json(self.layout.supervisor_json) or {}).get("accounts") or {}
        return len(found) == self.n and all(a.get("state") == "RUNNING" for a in found.values())


TICKS_S = os.sysconf("SC_CLK_TCK")  # /proc's CPU clock ticks a second


def sim_requests(url: str) -> int:
    """How many API requests the simulator at ``url`` served so far (its /sim/stats)."""
    base = url.split("/rest/", 1)[0].rstrip("/")
    with urllib.request.urlopen(f"{base}/sim/stats", timeout=30) as reply:
        served = json.load(reply)["requests"]
    return sum(count for endpoint, count in served.items() if not endpoint.startswith("sim/"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def histogram_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """The ``q`` quantile of bucket counts (one per bound, then +Inf), interpolated
    linearly within its bucket; past the last bound: that bound."""
    total = sum(counts)
    if total <= 0:
        return 0.0
    rank, seen, lower = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=False):
        if count and seen + count >= rank:
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return bounds[-1]


def snapshot(accounts: list[AccountDir]) -> tuple[float, list[float], list[float]]:
    """(ticks_total summed, lateness bucket counts summed, their bounds)."""
    ticks, counts, bounds = 0.0, list[float](), list[float]()
    for account in accounts:
        metrics: dict[str, Any] = dict(statefiles.read_metrics(account))
        ticks += sum(c["value"] for c in metrics.get("counters", []) if c["name"] == "ticks_total")
        late = metrics.get("histograms", {}).get("tick_lateness_seconds")
        if late:
            bounds = late["bounds"]
            counts = [a + b for a, b in zip(counts or [0] * len(late["counts"]),
                                            late["counts"], strict=True)]  # fmt: skip
    return ticks, counts, bounds


def config_text(url: str, state: Path, n: int, interval: int, spread: float | None) -> str:
    text = f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 60\n"
    text += f"metrics:\n  listen: 127.0.0.1:{free_port()}\n"
    if spread is not None:
        text += f"tick_spread: {spread}\n"
    return text + "accounts:\n" + "".join(ACCOUNT.format(i=i, interval=interval) for i in range(n))


def one_run(n: int, interval: int, window: float, spread: float | None, source: Path,
            workdir: Path) -> Run:  # fmt: skip
    sim, url = start_sim(20, workdir)
    state = workdir / "state"
    config = workdir / "runner.yaml"
    config.write_text(config_text(url, state, n, interval, spread))
    layout = StateDir(state)
    names = [f"acct-{i:03d}" for i in range(n)]
    accounts = [layout.account(name) for name in names]
    served = sim_requests(url)
    sim_cpu = cpu_ticks(sim.pid) or 0
    start = time.monotonic()
    with (workdir / "multirun.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "multirun", "start", str(config)], cwd=source,
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(source)},
        )  # fmt: skip
    try:

        def statuses() -> list[dict]:
            return [procutil.read_json(a.status) or {} for a in accounts]

        watch = StartWatch(layout, names, start)

        def running() -> bool:
            if proc.poll() is not None:
                raise SystemExit("fleet: multirun start exited:\n"
                                 + (workdir / "multirun.log").read_text()[-3000:])  # fmt: skip
            return watch.up()

        up = wait_for("all workers RUNNING", running, 300) - start
        start_cpu = {
            "simulator": ((cpu_ticks(sim.pid) or 0) - sim_cpu) / TICKS_S,
            "supervisor": (cpu_ticks(proc.pid) or 0) / TICKS_S,
            "workers": sum(cpu_ticks(p) or 0 for p in tree([proc.pid])[1:]) / TICKS_S,
        }
        requests = (sim_requests(url) - served) / n
        started = Run(up, 0.0, 0.0, 0.0, 0.0, 0.0, watch.status_s or up, start_cpu, requests)
        if not window:  # start and stop only
            return replace(started, stop_s=stop_and_time([proc], 120))
        wait_for("all ticked", lambda: all(s.get("ticks") for s in statuses()), 300)
        time.sleep(2 * interval)  # past the first ticks
        pids = tree([proc.pid, sim.pid])
        cpu0 = sum(cpu_ticks(p) or 0 for p in pids)
        ticks0, counts0, _ = snapshot(accounts)
        time.sleep(window)
        ticks1, counts1, bounds = snapshot(accounts)
        cpu1 = sum(cpu_ticks(p) or 0 for p in pids)
    finally:
        stop_s = stop_and_time([proc], 120) if proc.poll() is None else 0.0
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
    counts = [b - a for a, b in zip(counts0, counts1, strict=True)]
    due = n * window / interval
    return replace(
        started,
        ticks_run_pct=100 * (ticks1 - ticks0) / due,
        p50_ms=1000 * histogram_quantile(0.5, bounds, counts),
        p99_ms=1000 * histogram_quantile(0.99, bounds, counts),
        cpu_pct=100 * (cpu1 - cpu0) / TICKS_S / window,
        stop_s=stop_s,
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def start_lines(runs: list[Run]) -> list[str]:
    """The start's details: first status.json (before any request), requests and CPU."""
    rows = [
        ("every first status.json (s)", [r.status_s for r in runs]),
        ("requests per account", [r.start_requests for r in runs]),
    ]
    for part in ("simulator", "supervisor", "workers"):
        rows.append((f"CPU to RUNNING: {part} (s)", [r.start_cpu[part] for r in runs]))
    return [f"  {what:32}{spread(values):>24}" for what, values in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--tick-spread", type=float, help="runner.yaml's tick_spread")
    parser.add_argument("--tree", type=Path, default=ROOT, help="run multirun from this tree")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = []
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(args.accounts, args.interval, args.window, args.tick_spread,
                                args.tree, Path(tmp)))  # fmt: skip
    label = f"{args.accounts} accounts trading every {args.interval} s"
    if args.tick_spread is not None:
        label += f", tick_spread {args.tick_spread:g} s"
    lines = [f"{label}, {args.window:g} s windows, {len(runs)} rep(s) (median [min-max])"]
    rows = (("up_s", "start until all RUNNING (s)"), ("ticks_run_pct", "ticks run (%)"),
            ("p50_ms", "tick lateness p50 (ms)"), ("p99_ms", "tick lateness p99 (ms)"),
            ("cpu_pct", "CPU incl. simulator (% core)"),
            ("stop_s", "SIGTERM until all gone (s)"))  # fmt: skip
    for key, what in rows if args.window else (rows[0], rows[-1]):
        lines.append(f"  {what:32}{spread([getattr(r, key) for r in runs]):>24}")
    lines += start_lines(runs)
    table = "\n".join(lines)
    worst = {key: max(getattr(r, key) for r in runs) for key in ("up_s", "p99_ms", "stop_s")}
    worst["ticks_run_pct"] = min(r.ticks_run_pct for r in runs)
    figures = {"accounts": args.accounts, "interval_s": args.interval, "worst": worst,
               "median": {k: statistics.median(getattr(r, k) for r in runs) for k in worst},
               "runs": [asdict(r) for r in runs]}  # fmt: skip
    print(json.dumps({**figures, "table": table}, indent=2) if args.json else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
