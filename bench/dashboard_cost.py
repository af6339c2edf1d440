"""What the web dashboard costs the supervisor and the ticks: 50 accounts, 3 open pages.

    python bench/dashboard_cost.py [--accounts 50] [--pages 3] [--window 20]
                                   [--before DIR] [--json]

Starts an in-process simulator, ``multirun start`` (N accounts, strategy ``random``,
every second, with ``metrics:`` on and never scraped, only so the workers keep their
tick-lateness histograms) and ``multirun dashboard`` on it. Then three windows, one
after the other, in the same run:

1. ``baseline``: the dashboard serves, no page is open;
2. ``pages``: ``--pages`` clients each do what an open page does every ``POLL_MS``: fetch
   ``/api/fleet``, and the log tail and trades of the account it has selected (when its
   row carries ``logs_version``/``trades_version``: only those whose version moved since
   it fetched them, as page.html does; else every time, as the page did before);
3. ``baseline2``: no page again (how much the figures move by themselves: the noise).

In each window it reads the CPU time (utime + stime, /proc/PID/stat) of the supervisor
process alone, of the whole supervisor tree and of the dashboard process, and the tick
lateness from the workers' own histograms (mean exact, p99 interpolated as
``histogram_quantile`` does). Prints the figures and the ratios against the baseline.
The target (issue 26): the pages add under 1 % of a core to the supervisor, and the
lateness does not move beyond the baseline's own noise.

``--before DIR`` (a ``git archive`` of an older commit): a second dashboard run from that
tree on the same fleet, with its own ``--pages`` clients in the same window: the
dashboard's before/after side by side (its CPU, % of a core and ms per page poll).
Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.metrics_cost import HZ, lateness, quantile, ratio  # noqa: E402
from bench.procstat import cpu_ticks, descendants  # noqa: E402
from bench.scale import ACCOUNT  # noqa: E402  (the same accounts as the scale bench)
from multirun.core import procutil  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.sim import SimConfig, SimServer  # noqa: E402
from multirun.web.server import POLL_MS  # noqa: E402

MODES = ("baseline", "pages", "baseline2")


@dataclass
class Figures:
    mode: str
    supervisor_cpu_pct: float  # of one core: the supervisor process alone
    tree_cpu_pct: float  # the supervisor and every child (workers, metrics)
    dashboard_cpu_pct: float  # the dashboard process (not the supervisor's)
    before_cpu_pct: float | None  # the --before tree's dashboard, beside it
    lateness_mean_ms: float | None
    lateness_p99_ms: float | None
    ticks: int
    requests: int
    polls: int = 0
    fleet_bytes: int = 0
    before_fleet_bytes: int = 0
    before_requests: int = 0
    before_polls: int = 0


class Pages:
    """``n`` clients requesting what an open page requests, every second."""

    def __init__(self, url: str, names: list[str], n: int) -> None:
        self.url, self.names, self.n = url, names, n
        self.stop = threading.Event()
        self.count = 0  # requests
        self.polls = 0
        self.fleet_bytes = 0  # the last /api/fleet body's size
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.n):
            name = self.names[i * 7 % len(self.names)]
            thread = threading.Thread(target=self._page, args=(name,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _page(self, name: str) -> None:
        session = requests.Session()
        seen: dict[str, object] = {}  # the version of the log tail and trades fetched
        while not self.stop.wait(POLL_MS / 1000):  # as often as the page polls
            reply = session.get(self.url + "api/fleet", timeout=5)
            reply.raise_for_status()
            self.count += 1
            self.fleet_bytes = len(reply.content)
            (row,) = [a for a in reply.json()["accounts"] if a["name"] == name]
            for what in ("logs", "trades"):
                version = row.get(f"{what}_version")
                if version is None or seen.get(what) != version:
                    url = f"{self.url}api/accounts/{name}/{what}"
                    session.get(url, timeout=5).raise_for_status()
                    self.count += 1
                    seen[what] = version
            self.polls += 1

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def measure(
    mode: str,
    window: float,
    layout: StateDir,
    names: list[str],
    supervisor: int,
    dashboard: int,
    pages: Pages | None,
    old: tuple[int, Pages | None] | None = None,  # the --before dashboard, its pages
) -> Figures:
    tree = [supervisor, *descendants(supervisor)]
    pids = [*tree, dashboard, *([old[0]] if old else [])]
    clients = [p for p in (pages, old[1] if old else None) if p is not None]
    before = {p: cpu_ticks(p) or 0 for p in pids}
    late0, sum0 = lateness(layout, names)
    for client in clients:
        client.start()
    began = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - began
    after = {p: cpu_ticks(p) or 0 for p in pids}
    late1, sum1 = lateness(layout, names)
    for client in clients:
        client.close()

    def pct(which: list[int]) -> float:
        used = sum(after[p] - before[p] for p in which)
        return round(100.0 * used / HZ / elapsed, 2)

    counts = [b - a for a, b in zip(late0, late1, strict=True)]
    ticks = int(sum(counts))
    p99 = quantile(0.99, counts)
    return Figures(
        mode=mode,
        supervisor_cpu_pct=pct([supervisor]),
        tree_cpu_pct=pct(tree),
        dashboard_cpu_pct=pct([dashboard]),
        before_cpu_pct=pct([old[0]]) if old else None,
        lateness_mean_ms=round(1000 * (sum1 - sum0) / ticks, 3) if ticks else None,
        lateness_p99_ms=None if p99 is None else round(1000 * p99, 3),
        ticks=ticks,
        requests=pages.count if pages is not None else 0,
        polls=pages.polls if pages is not None else 0,
        fleet_bytes=pages.fleet_bytes if pages is not None else 0,
        before_fleet_bytes=old[1].fleet_bytes if old and old[1] else 0,
        before_requests=old[1].count if old and old[1] else 0,
        before_polls=old[1].polls if old and old[1] else 0,
    )


def serve(
    command: list[str], config: Path, log: Path, tree: Path, deadline: float
) -> tuple[subprocess.Popen[bytes], str]:
    """``multirun dashboard`` run from ``tree``'s source; the process and its page's URL."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with log.open("wb") as out:
        dashboard = subprocess.Popen(
            [*command, "dashboard", str(config), "--listen", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tree, env=env,
        )  # fmt: skip
    while not (found := re.search(r"on (http://\S+/)", log.read_text())):
        if dashboard.poll() is not None or time.monotonic() > deadline:
            dashboard.kill()
            raise SystemExit(f"dashboard_cost: no dashboard: {log.read_text()}")
        time.sleep(0.1)
    return dashboard, found.group(1)


def run(
    n: int,
    page_count: int,
    window: float,
    workdir: Path,
    url: str,
    interval: int = 1,
    before_tree: Path | None = None,
) -> dict[str, Figures]:
    state = workdir / "state"
    config = workdir / "runner.yaml"
    config.write_text(
        f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 30\n"
        'metrics:\n  listen: "127.0.0.1:0"\naccounts:\n'
        + "".join(ACCOUNT.format(i=i, interval=interval) for i in range(n))
    )
    layout, names = StateDir(state), [f"acct-{i:03d}" for i in range(n)]
    command = [sys.executable, "-m", "multirun"]
    with (workdir / "supervisor.log").open("wb") as out:
        supervisor = subprocess.Popen(
            [*command, "start", str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    dashboard: subprocess.Popen[bytes] | None = None
    old: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 90
        while not all(
            ((procutil.read_json(layout.account(a).status) or {}).get("ticks") or 0) >= 1
            for a in names
        ):
            if time.monotonic() > deadline or supervisor.poll() is not None:
                raise SystemExit("dashboard_cost: the accounts did not all tick")
            time.sleep(0.2)
        dashboard, page_url = serve(command, config, workdir / "dashboard.log", ROOT, deadline + 30)
        if before_tree is not None:
            old_log = workdir / "before.log"
            old, old_url = serve(command, config, old_log, before_tree, deadline + 60)
        time.sleep(10.0)  # let the start (50 logins, first ticks) settle before measuring
        return {
            mode: measure(
                mode,
                window,
                layout,
                names,
                supervisor.pid,
                dashboard.pid,
                Pages(page_url, names, page_count) if mode == "pages" else None,
                None
                if old is None
                else (old.pid, Pages(old_url, names, page_count) if mode == "pages" else None),
            )
            for mode in MODES
        }
    finally:
        for served in (dashboard, old):
            if served is not None:
                served.send_signal(signal.SIGTERM)
                served.wait(timeout=30)
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=120)


def report(
    figures: dict[str, Figures], n: int, pages: int, window: float, interval: int = 1
) -> str:
    base, on, again = (figures[m] for m in MODES)
    lines = [
        f"dashboard_cost: {n} accounts every {interval} s, {pages} open pages, "
        f"{window:g} s windows",
        f"{'':10} {'supervisor CPU %':>17} {'tree CPU %':>11} {'dashboard CPU %':>16} "
        f"{'lateness mean ms':>17} {'p99 ms':>8} {'ticks':>6} {'requests':>9}",
    ]
    for f in (base, on, again):
        lines.append(
            f"{f.mode:10} {f.supervisor_cpu_pct:17.2f} {f.tree_cpu_pct:11.2f} "
            f"{f.dashboard_cpu_pct:16.2f} {f.lateness_mean_ms or 0:17.3f} "
            f"{f.lateness_p99_ms or 0:8.3f} {f.ticks:6d} {f.requests:9d}"
        )
    added = on.supervisor_cpu_pct - base.supervisor_cpu_pct
    lines += [
        f"pages / baseline: supervisor CPU {ratio(on.supervisor_cpu_pct, base.supervisor_cpu_pct)}"
        f" ({added:+.2f} % of a core; target < 1), lateness mean "
        f"{ratio(on.lateness_mean_ms, base.lateness_mean_ms)}, p99 "
        f"{ratio(on.lateness_p99_ms, base.lateness_p99_ms)}",
        f"baseline2 / baseline (the noise): supervisor CPU "
        f"{ratio(again.supervisor_cpu_pct, base.supervisor_cpu_pct)}, lateness mean "
        f"{ratio(again.lateness_mean_ms, base.lateness_mean_ms)}, p99 "
        f"{ratio(again.lateness_p99_ms, base.lateness_p99_ms)}",
        f"the dashboard process itself: {on.dashboard_cpu_pct:.2f} % of a core with "
        f"{pages} pages ({base.dashboard_cpu_pct:.2f} % with none)",
        f"  {per_poll(on.dashboard_cpu_pct, window, on.polls, on.requests)}; "
        f"{body(on.fleet_bytes)}",
    ]
    if on.before_cpu_pct is not None and base.before_cpu_pct is not None:
        lines += [
            f"the --before dashboard, beside it: {on.before_cpu_pct:.2f} % of a core with "
            f"{pages} pages ({base.before_cpu_pct:.2f} % with none)",
            f"  {per_poll(on.before_cpu_pct, window, on.before_polls, on.before_requests)}; "
            f"{body(on.before_fleet_bytes)}",
            f"after / before (pages window): {ratio(on.dashboard_cpu_pct, on.before_cpu_pct)}",
        ]
    return "\n".join(lines)


def per_poll(cpu_pct: float, window: float, polls: int, requests_made: int) -> str:
    """The dashboard's CPU per page poll and per request (ms), over the pages window."""
    used_ms = cpu_pct / 100.0 * window * 1000.0
    each = f"{used_ms / polls:.2f} ms of CPU a page poll" if polls else "no poll"
    per_request = f"{used_ms / requests_made:.2f} ms a request" if requests_made else ""
    return f"{each}, {per_request} ({polls} polls, {requests_made} requests)"


def body(size: int) -> str:
    return f"/api/fleet's body: {size / 1024:.1f} KB"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--interval", type=int, default=1, help="each account's tick (s)")
    parser.add_argument("--before", type=Path, help="an older tree: its dashboard beside")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sim = SimServer(SimConfig(host="127.0.0.1", port=0)).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(
                args.accounts,
                args.pages,
                args.window,
                Path(tmp),
                sim.base_url,
                args.interval,
                args.before,
            )
    finally:
        sim.stop()
    if args.json:
        print(json.dumps({m: asdict(f) for m, f in figures.items()}, indent=2))
    else:
        print(report(figures, args.accounts, args.pages, args.window, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
