"""What money limits, the dashboard, metrics and alerts add to a deployed fleet, side by side.

    python bench/features_cost.py [--accounts 50] [--interval 5] [--window 30]
                                  [--late-interval 1] [--late-window 20] [--pages 3]
                                  [--reps 3] [--json]

Issue 27's target 4: the features cost little. Each repetition runs two phases; in each,
every fleet ticks at the same time (so the machine's other load hits them alike), each
fleet ``multirun start`` of N accounts (strategy ``random``, the same seeds: the same
trades) against its own ``multirun sim`` process (20 ms fills):

- ``bare``: no ``risk``, no ``metrics:``, no ``web:``, no ``notify:``;
- ``all``: a file-level ``risk`` and each account's own ``risk`` (limits far from
  crossed: checked every tick, never acted on), ``metrics:`` scraped every
  ``SCRAPE_S`` like Prometheus, ``web:`` with ``--pages`` clients each doing what an open
  page does (``GET /`` once, then every ``POLL_MS`` ``/api/fleet``, and its selected
  account's log tail and trades when their row's version moved, as page.html does),
  ``notify:`` to a webhook receiver on 127.0.0.1 (this process; a healthy fleet raises
  no alert, so what it costs is the notifier's watching; the posts it got are printed);
- phase 2 only: ``bare2``, a second bare fleet: what two identical fleets differ by (the
  noise the lateness difference is judged against).

Phase 1 (CPU): bare and all every ``--interval`` s (5: deployed). Once every worker has
ticked (and one interval more), it reads utime + stime (/proc/PID/stat) over ``--window``
seconds (a multiple of ``SCRAPE_S``: the same number of scrapes in every window) of each
fleet's processes: the supervisor, its workers, its service children (metrics, web,
notify); the simulators and the page/scrape clients apart (not multirun's). CPU per
account-tick is the fleet's CPU over the N * window / interval ticks due; the ratio is
all / bare, median [min-max] over ``--reps``.

Phase 2 (lateness): bare, bare2 and all every ``--late-interval`` s (1: where lateness
matters), ``--late-window`` seconds (0: no phase 2). A tick's lateness is how long after
its scheduled start (grid point plus the account's wake-up offset) it began, read the
same way on every fleet from the workers' own ``status.json`` (``last_tick_utc``, ms,
and ``tick_offset_ms``), polled every ``POLL_S``: bare fleets keep no histograms. At
1 s a worker writes a tick that only made progress at most every 1.8 s, so about every
other tick is seen, which one not depending on its lateness. The all fleet's own
histograms (5 ms buckets, interpolated) are printed beside as a check.

``--before DIR`` runs a third fleet in phase 1, the all fleet's twin run from another
source tree (``git archive`` of a commit before a change, ``schemas/`` included), with
its own pages and scraper: a change's before/after in the same window.

Targets (exit 0 when met): CPU all / bare <= 1.05 (phase 1's median); lateness p99 of
all minus bare (phase 2's median) within the noise: at most what bare2 and bare differ
by (the median of the reps' absolute differences), never less than the 1 ms resolution
of the timestamps. Linux only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.metrics_cost import comm, lateness, quantile  # noqa: E402
from bench.procstat import cpu_ticks, descendants  # noqa: E402
from bench.scale import ACCOUNT, start_sim, stop_and_time, wait_for  # noqa: E402
from multirun.core import procutil  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.web.server import POLL_MS  # noqa: E402

SCRAPE_S = 15.0  # Prometheus' common scrape interval
POLL_S = 0.5  # how often the status files are read for lateness (< 1.8 s: none missed)
RESOLUTION_MS = 1.0  # last_tick_utc has milliseconds
SLACK_S = 0.002  # how early a tick on time may read at that resolution
CPU_BOUND = 1.05
# Limits no fleet of the bench comes near (volume 1 BTCUSD): checked, never crossed.
FILE_RISK = "risk:\n  max_daily_loss: 1000000\n  max_drawdown: 1000000\n  on_breach: pause\n"
ACCOUNT_RISK = "    risk:\n      max_daily_loss: 100000\n      max_drawdown: 100000\n"
FEATURES = ("risk", "metrics", "web", "notify")
BEFORE = "before"  # the all fleet's twin run from --before's tree
SERVICES = ("metrics", "web", "notify")  # the all fleet's service children (mr:NAME)
PROCESS_GROUPS = ("supervisor", "workers", *SERVICES, "other")


# --- the fleets ------------------------------------------------------------------------


@dataclass
class Fleet:
    """One ``multirun start`` and its own simulator."""

    label: str  # bare, bare2, all
    workdir: Path
    interval: int
    names: list[str]
    sim: subprocess.Popen[bytes]
    url: str
    features: frozenset[str] = frozenset()  # of FEATURES: none for a bare fleet
    source: Path = ROOT  # the multirun tree it runs
    proc: subprocess.Popen[bytes] | None = None

    @property
    def full(self) -> bool:
        return self.label == "all"

    @property
    def layout(self) -> StateDir:
        return StateDir(self.workdir / "state")

    def statuses(self) -> list[Path]:
        return [self.layout.account(name).status for name in self.names]

    def urls(self) -> dict[str, str]:
        """Where its metrics (supervisor.json's ``announced``) and its dashboard (its line
        in the supervisor's output: the web child has no ready handshake) are served."""
        data = procutil.read_json(self.layout.supervisor_json) or {}
        found = dict(data.get("announced") or {})
        web = re.search(r"serving the dashboard on (http://\S+)", self.log.read_text())
        if web:
            found["web"] = web.group(1)
        return found

    @property
    def log(self) -> Path:
        return self.workdir / "multirun.log"


def config_text(fleet: Fleet, hook_url: str) -> str:
    state = fleet.workdir / "state"
    text = f"version: 1\nserver: {fleet.url}\nstate_dir: {state}\nstop_timeout: 60\n"
    account = ACCOUNT
    if "metrics" in fleet.features:
        text += 'metrics:\n  listen: "127.0.0.1:0"\n'
    if "web" in fleet.features:
        text += 'web:\n  listen: "127.0.0.1:0"\n'
    if "notify" in fleet.features:
        text += f"notify:\n  - url: {hook_url}\n    format: json\n"
    if "risk" in fleet.features:
        text += FILE_RISK
        account += ACCOUNT_RISK
    text += "accounts:\n"
    return text + "".join(
        account.format(i=i, interval=fleet.interval) for i in range(len(fleet.names))
    )


def start_fleets(labels: list[str], n: int, interval: int, workdir: Path,
                 setup: Setup) -> list[Fleet]:  # fmt: skip
    """A fleet per label, each on its own simulator; ``all`` (and ``before``, from the
    ``--before`` tree) has the features."""
    fleets: list[Fleet] = []
    names = [f"acct-{i:03d}" for i in range(n)]
    try:
        for label in labels:
            (workdir / label).mkdir()
            sim, url = start_sim(20, workdir / label)
            chosen = setup.features if label in ("all", BEFORE) else frozenset()
            source = setup.before if label == BEFORE and setup.before else ROOT
            fleets.append(Fleet(label, workdir / label, interval, names, sim, url, chosen, source))
        for fleet in fleets:
            config = fleet.workdir / "runner.yaml"
            config.write_text(config_text(fleet, setup.hook_url))
            with fleet.log.open("wb") as out:
                fleet.proc = subprocess.Popen(
                    [sys.executable, "-m", "multirun", "start", str(config)], cwd=fleet.source,
                    stdout=out, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": str(fleet.source)},
                )  # fmt: skip
    except BaseException:
        stop_fleets(fleets)
        raise
    return fleets


def wait_ticking(fleets: list[Fleet]) -> None:
    """Every worker has ticked and the all fleet's services have announced themselves."""

    def ready() -> bool:
        for fleet in fleets:
            assert fleet.proc is not None
            if fleet.proc.poll() is not None:
                tail = fleet.log.read_text()[-3000:]
                raise SystemExit(f"features_cost: {fleet.label}: multirun exited early:\n{tail}")
        ticked = all(
            (procutil.read_json(p) or {}).get("ticks") for f in fleets for p in f.statuses()
        )
        served = all(f.features & {"metrics", "web"} <= set(f.urls()) for f in fleets)
        return ticked and served

    wait_for("every worker ticked", ready, 300)


def stop_fleets(fleets: list[Fleet]) -> None:
    stop_and_time([f.proc for f in fleets if f.proc is not None], 120)
    for fleet in fleets:
        fleet.sim.send_signal(signal.SIGTERM)
        fleet.sim.wait(timeout=30)


def process_groups(fleet: Fleet) -> dict[str, list[int]]:
    """The fleet's processes by what they are: the supervisor, its workers, each service."""
    assert fleet.proc is not None
    groups: dict[str, list[int]] = {name: [] for name in PROCESS_GROUPS}
    groups["supervisor"].append(fleet.proc.pid)
    for pid in descendants(fleet.proc.pid):
        groups[process_group(pid)].append(pid)
    return groups


def process_group(pid: int) -> str:
    """``mr:NAME`` (forked: a service or a worker), or the dashboard (web: exec'd)."""
    name = comm(pid)
    if name.startswith("mr:"):
        return name[3:] if name[3:] in SERVICES else "workers"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        args = []
    return "web" if b"dashboard" in args else "other"


def cpu_s(pids: list[int]) -> float:
    return sum(cpu_ticks(pid) or 0 for pid in pids) / os.sysconf("SC_CLK_TCK")


def sim_requests(url: str) -> int:
    """The simulator's API requests so far."""
    with urllib.request.urlopen(url.split("/rest/")[0] + "/sim/stats", timeout=10) as reply:
        counts = json.load(reply)["requests"]
    return sum(n for name, n in counts.items() if not name.startswith("sim/"))


# --- what reads and uses the all fleet ----------------------------------------------------


class Hooks:
    """A webhook receiver on 127.0.0.1 (the notifier's target): counts what it is sent."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    event = str(json.loads(body).get("event"))
                except ValueError:
                    event = "unreadable"
                hooks.posts[event] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


CLIENTS = """
import json, signal, sys, threading, requests
page_url, metrics_url, pages, scrape_s, poll_s, *names = sys.argv[1:]
stop, counts = threading.Event(), {"page_requests": 0, "scrapes": 0}
signal.signal(signal.SIGTERM, lambda *_: stop.set())

def page(name):  # what page.html does: load it, then poll the fleet, and its selected
    # account's log tail and trades when their row's version moved (or never seen)
    session = requests.Session()
    session.get(page_url, timeout=10).raise_for_status()
    shown = {}
    while not stop.wait(float(poll_s)):
        reply = session.get(page_url + "api/fleet", timeout=10)
        reply.raise_for_status()
        counts["page_requests"] += 1
        row = next((a for a in reply.json()["accounts"] if a["name"] == name), {})
        for what in ("logs", "trades"):
            version = row.get(f"{what}_version")
            if version is None or shown.get(what) != version:
                session.get(page_url + f"api/accounts/{name}/{what}", timeout=10).raise_for_status()
                counts["page_requests"] += 1
                shown[what] = version

def scrape():  # Prometheus: GET /metrics every scrape_s
    session = requests.Session()
    while True:
        session.get(metrics_url, timeout=10).raise_for_status()
        counts["scrapes"] += 1
        if stop.wait(float(scrape_s)):
            return

threads = [threading.Thread(target=page, args=(names[i * 7 % len(names)],))
           for i in range(int(pages))]
if metrics_url != "-":
    threads.append(threading.Thread(target=scrape))
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(counts), flush=True)
"""


def start_clients(fleet: Fleet, pages: int) -> subprocess.Popen[str]:
    """The open pages and the Prometheus scraper of ``fleet``, in a process of their own."""
    urls = fleet.urls()
    pages = pages if "web" in urls else 0
    args = [urls.get("web", "-"), urls.get("metrics", "-"), str(pages), str(SCRAPE_S),
            str(POLL_MS / 1000)]  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", CLIENTS, *args, *fleet.names],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def stop_clients(proc: subprocess.Popen[str]) -> dict[str, int]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    if proc.returncode != 0:
        raise SystemExit(f"features_cost: the page/scrape clients failed (exit {proc.returncode})")
    return dict(json.loads(out))


# --- tick lateness, read alike on every fleet ---------------------------------------------


def tick_lateness_ms(status: dict[str, Any], interval: int) -> tuple[float, float] | None:
    """(when the last tick began, how late after grid point + offset, ms) from a status."""
    began, offset = status.get("last_tick_utc"), status.get("tick_offset_ms")
    if not began or offset is None:
        return None
    t = datetime.fromisoformat(began).timestamp()
    # The start is cut to the ms and the offset rounded to it: a tick on time may read up
    # to ~1.5 ms early, which must not wrap to the previous grid point (a whole interval).
    due = math.floor((t - offset / 1000 + SLACK_S) / interval) * interval + offset / 1000
    return t, round(max(0.0, 1000 * (t - due)), 3)


class LatenessSampler:
    """Reads every fleet's status files every ``POLL_S``: each tick seen once, kept with
    its start time (a thread; only files changed since the last read are parsed)."""

    def __init__(self, fleets: list[Fleet]) -> None:
        self.fleets = fleets
        self.seen: dict[tuple[str, str], dict[float, float]] = {}  # (fleet, name): {t: ms}
        self.mtimes: dict[Path, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(POLL_S):
            for fleet in self.fleets:
                for name, path in zip(fleet.names, fleet.statuses(), strict=True):
                    self._read(fleet, name, path)

    def _read(self, fleet: Fleet, name: str, path: Path) -> None:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return
        if self.mtimes.get(path) == mtime:
            return
        self.mtimes[path] = mtime
        found = tick_lateness_ms(procutil.read_json(path) or {}, fleet.interval)
        if found is not None:
            self.seen.setdefault((fleet.label, name), {})[found[0]] = found[1]

    def between(self, label: str, began: float, ended: float) -> list[float]:
        return sorted(ms for (side, _), ticks in list(self.seen.items()) if side == label
                      for t, ms in list(ticks.items()) if began <= t < ended)  # fmt: skip

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile, or None without values."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


# --- one phase ----------------------------------------------------------------------------


@dataclass
class Side:
    """One fleet over one window."""

    cpu_pct: float  # of one core: supervisor, workers and services
    cpu_ms_per_tick: float
    groups_pct: dict[str, float]  # by process group
    sim_cpu_pct: float
    requests_per_tick: float
    late_p50_ms: float | None
    late_p99_ms: float | None
    late_max_ms: float | None
    late_samples: int
    hist_p99_ms: float | None = None  # the all fleet's own histograms
    clients_cpu_pct: float = 0.0  # the all fleet's pages and scraper (not multirun's)
    clients: dict[str, int] = field(default_factory=dict)
    not_running: int = 0  # accounts not RUNNING at the end (a limit acted on: a fault)


@dataclass
class Setup:
    """What every phase shares: the fleets' size, the all fleet's features and pages."""

    accounts: int  # a fleet's, phase 1
    late_accounts: int  # a fleet's, phase 2
    features: frozenset[str]
    pages: int
    hook_url: str
    before: Path | None = None  # a tree whose multirun runs a third fleet in phase 1


def run_phase(labels: list[str], n: int, interval: int, window: float, setup: Setup,
              workdir: Path) -> dict[str, Side]:  # fmt: skip
    """Fleets ``labels`` of ``n`` accounts side by side every ``interval`` s; each one's
    figures over ``window``."""
    fleets = start_fleets(labels, n, interval, workdir, setup)
    sampler = LatenessSampler(fleets)
    clients: dict[str, subprocess.Popen[str]] = {}
    try:
        wait_ticking(fleets)
        full = next(f for f in fleets if f.full)
        clients = {f.label: start_clients(f, setup.pages) for f in fleets if f.features}
        time.sleep(max(interval, 3))  # past the first (costlier) ticks; the pages open
        groups = {f.label: process_groups(f) for f in fleets}
        pids = [p for g in groups.values() for ps in g.values() for p in ps]
        pids += [f.sim.pid for f in fleets] + [c.pid for c in clients.values()]
        hist0 = lateness(full.layout, full.names)[0]
        asked0 = {f.label: sim_requests(f.url) for f in fleets}
        before = {p: cpu_s([p]) for p in pids}
        began = time.time()
        time.sleep(window)
        after = {p: cpu_s([p]) for p in pids}
        ended = time.time()
        asked = {f.label: sim_requests(f.url) - asked0[f.label] for f in fleets}
        hist = [b - a for a, b in zip(hist0, lateness(full.layout, full.names)[0], strict=True)]
        time.sleep(min(2 * POLL_S + 0.5, interval))  # the window's last ticks read
        used = {p: after[p] - before[p] for p in pids}
        counts = {label: stop_clients(c) for label, c in clients.items()}
        clients_pids = {label: c.pid for label, c in clients.items()}
        clients = {}
        states = {f.label: [(procutil.read_json(p) or {}).get("state") for p in f.statuses()]
                  for f in fleets}  # fmt: skip
    finally:
        sampler.close()
        for proc in clients.values():
            proc.kill()
            proc.wait()
        stop_fleets(fleets)
    ticks = n * window / interval
    sides = {}
    for fleet in fleets:
        by_group = {g: sum(used[p] for p in ps) for g, ps in groups[fleet.label].items()}
        total = sum(by_group.values())
        late = sampler.between(fleet.label, began, ended)
        p99 = quantile(0.99, hist) if fleet.full else None
        sides[fleet.label] = Side(
            cpu_pct=100 * total / window,
            cpu_ms_per_tick=1000 * total / ticks,
            groups_pct={g: round(100 * s / window, 2) for g, s in by_group.items()},
            sim_cpu_pct=100 * used[fleet.sim.pid] / window,
            requests_per_tick=asked[fleet.label] / ticks,
            late_p50_ms=percentile(late, 50),
            late_p99_ms=percentile(late, 99),
            late_max_ms=late[-1] if late else None,
            late_samples=len(late),
            hist_p99_ms=None if p99 is None else 1000 * p99,
            clients_cpu_pct=(
                100 * used[clients_pids[fleet.label]] / window
                if fleet.label in clients_pids
                else 0.0
            ),
            clients=counts.get(fleet.label, {}),
            not_running=sum(state != "RUNNING" for state in states[fleet.label]),
        )
    return sides


# --- report -------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def values(runs: list[dict[str, Side]], label: str, key: str) -> list[float]:
    found = [getattr(run[label], key) for run in runs]
    return [float(v) for v in found if v is not None]


def phase_table(title: str, runs: list[dict[str, Side]]) -> list[str]:
    labels = list(runs[0])
    rows = [("CPU, multirun's processes (% core)", "cpu_pct"),
            ("CPU per account-tick (ms)", "cpu_ms_per_tick"),
            ("requests per tick", "requests_per_tick"),
            ("its simulator's CPU (% core)", "sim_cpu_pct"),
            ("tick lateness p50 (ms)", "late_p50_ms"), ("tick lateness p99 (ms)", "late_p99_ms"),
            ("tick lateness max (ms)", "late_max_ms"), ("ticks seen", "late_samples")]  # fmt: skip
    lines = [title, f"{'':36}" + "".join(f"{label:>22}" for label in labels)]
    for name, key in rows:
        cells = [spread(values(runs, label, key)) if values(runs, label, key) else "-"
                 for label in labels]  # fmt: skip
        lines.append(f"{name:36}" + "".join(f"{cell:>22}" for cell in cells))
    for label in labels:
        groups = {g: spread([run[label].groups_pct[g] for run in runs]) for g in PROCESS_GROUPS}
        shown = [g for g in PROCESS_GROUPS if any(run[label].groups_pct[g] for run in runs)]
        lines.append(
            f"{label} by process (% core): " + ", ".join(f"{g} {groups[g]}" for g in shown)
        )
    full = [run["all"] for run in runs]
    hist = [s.hist_p99_ms for s in full if s.hist_p99_ms is not None]
    lines.append(
        f"all: page/scrape clients {spread([s.clients_cpu_pct for s in full])} % core (not "
        f"counted), {full[-1].clients} in the last window; its own histograms' p99 "
        f"{spread(hist) if hist else '-'} ms; accounts not RUNNING at the end: "
        f"{max(s.not_running for s in full)}"
    )
    return lines


def shown(features: frozenset[str], pages: int) -> str:
    said = {"risk": "risk limits", "metrics": f"metrics scraped every {SCRAPE_S:g} s",
            "web": f"web with {pages} open pages", "notify": "notify"}  # fmt: skip
    return ", ".join(said[f] for f in FEATURES if f in features)


def report(cpu: list[dict[str, Side]], late: list[dict[str, Side]], args: argparse.Namespace,
           posts: Counter[str]) -> tuple[str, dict[str, Any]]:  # fmt: skip
    features = frozenset(args.features.split(","))
    late_accounts = args.late_accounts or args.accounts
    ratios = [run["all"].cpu_pct / run["bare"].cpu_pct for run in cpu]
    lines = phase_table(
        f"features_cost: {args.accounts} accounts a fleet, bare beside all "
        f"({shown(features, args.pages)}), every {args.interval} s, {args.window:g} s windows, "
        f"{len(cpu)} reps (median [min-max])",
        cpu,
    )
    lines.append(f"ratio all / bare (CPU, {args.interval} s): {spread(ratios)} "
                 f"(target <= {CPU_BOUND:g})")  # fmt: skip
    figures: dict[str, Any] = {
        "accounts": args.accounts, "interval_s": args.interval, "window_s": args.window,
        "pages": args.pages, "ratio": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios), "webhook_posts": dict(posts),
        "cpu_runs": [{k: asdict(s) for k, s in run.items()} for run in cpu],
    }  # fmt: skip
    if BEFORE in cpu[0]:
        was = [run[BEFORE].cpu_pct / run["bare"].cpu_pct for run in cpu]
        lines.append(f"ratio before / bare (all, run from {args.before}): {spread(was)}")
        figures["before_ratio"] = statistics.median(was)
    if late:
        excess = [
            run["all"].late_p99_ms - run["bare"].late_p99_ms
            for run in late
            if run["all"].late_p99_ms is not None and run["bare"].late_p99_ms is not None
        ]
        noise = [
            abs(run["bare2"].late_p99_ms - run["bare"].late_p99_ms)
            for run in late
            if run["bare2"].late_p99_ms is not None and run["bare"].late_p99_ms is not None
        ]
        late_ratio = [run["all"].cpu_pct / run["bare"].cpu_pct for run in late]
        noise_ratio = [run["bare2"].cpu_pct / run["bare"].cpu_pct for run in late]
        bound = max(RESOLUTION_MS, statistics.median(noise)) if noise else RESOLUTION_MS
        lines.append("")
        lines += phase_table(
            f"lateness: bare, bare2 and all side by side, {late_accounts} accounts a fleet "
            f"every {args.late_interval} s, {args.late_window:g} s windows",
            late,
        )
        lines += [
            f"ratio all / bare (CPU, {args.late_interval} s): {spread(late_ratio)}; bare2 / bare "
            f"(the noise): {spread(noise_ratio)}",
            f"p99 lateness all - bare: {spread(excess)} ms; |bare2 - bare| (the noise): "
            f"{spread(noise)} ms (target: all - bare <= {bound:.2f} ms)",
        ]
        figures.update(
            late_interval_s=args.late_interval, late_window_s=args.late_window,
            late_accounts=late_accounts,
            late_excess_ms=statistics.median(excess), late_noise_ms=bound,
            late_runs=[{k: asdict(s) for k, s in run.items()} for run in late],
        )  # fmt: skip
    lines.append(f"webhook posts received: {dict(posts) or 'none (no alert: a healthy fleet)'}")
    return "\n".join(lines), figures


def met(figures: dict[str, Any]) -> bool:
    cpu = figures["ratio"] <= CPU_BOUND
    late = "late_excess_ms" not in figures or figures["late_excess_ms"] <= figures["late_noise_ms"]
    return cpu and late


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--window", type=float, default=30.0, help="a multiple of 15 s")
    parser.add_argument("--late-interval", type=int, default=1)
    parser.add_argument("--late-window", type=float, default=20.0, help="0: no lateness phase")
    parser.add_argument("--late-accounts", type=int, help="a fleet's in phase 2 (--accounts)")
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument(
        "--before", type=Path,
        help="a source tree (git archive of a commit before a change): its all fleet runs "
             "beside the others in phase 1, a before/after in one window",
    )  # fmt: skip
    parser.add_argument(
        "--features", default=",".join(FEATURES),
        help="what the all fleet has, of " + ", ".join(FEATURES) + " (to find what costs)",
    )  # fmt: skip
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    features = frozenset(args.features.split(","))
    if not features <= set(FEATURES):
        parser.error(f"--features: of {', '.join(FEATURES)}")
    hooks = Hooks()
    late_accounts = args.late_accounts or args.accounts
    setup = Setup(args.accounts, late_accounts, features, args.pages, hooks.url, args.before)
    first = ["bare", "all", BEFORE] if args.before else ["bare", "all"]
    cpu, late = [], []
    try:
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as tmp:
                cpu.append(run_phase(first, args.accounts, args.interval,
                                     args.window, setup, Path(tmp)))  # fmt: skip
            if args.late_window > 0:
                with tempfile.TemporaryDirectory() as tmp:
                    late.append(run_phase(["bare", "bare2", "all"], late_accounts,
                                          args.late_interval, args.late_window, setup,
                                          Path(tmp)))  # fmt: skip
    finally:
        hooks.close()
    table, figures = report(cpu, late, args, hooks.posts)
    print(json.dumps({**figures, "table": table}, indent=2) if args.json else table)
    return 0 if met(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
