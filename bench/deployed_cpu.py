"""Deployed CPU, side by side: N multirun accounts beside N fair hand-written loops, at once.

    python bench/deployed_cpu.py [--accounts 50] [--interval 5] [--window 30] [--reps 3] [--json]

The fair anchor of issue 27: ``bench/seedplus.py`` (ALGOGENE's example loop written by hand
to do what a multirun trading tick does: journal durably before sending, confirm the
fill, close, confirm the close, read the P&L, record it). Each repetition starts two
``multirun sim`` processes with 20 ms fills (one per side, so each side's requests are
counted apart and neither waits on the other's server), then, at the same time:

- ``multirun start`` of N accounts (strategy ``random``, every ``--interval`` s), the real
  supervisor and its N forked workers;
- N ``python bench/seedplus.py`` processes at the same interval.

``--tree DIR`` runs multirun from another source tree; given twice, both fleets run side
by side (each on its own simulator), a before/after comparison in one window.

Once every worker is RUNNING and has ticked ``--warmup`` times (default 6) and every loop
has run a round, it reads
utime + stime (/proc/PID/stat) of each side's processes over ``--window`` seconds of
ticking (both sides tick through the same window, so machine noise hits both alike),
and each simulator's request counts. Prints per side: % of a core, CPU ms per
account-tick (the window's CPU over N * window / interval ticks), requests per tick;
then the ratio multirun / seedplus, median [min-max] over the repetitions. Linux only.

Why a warm-up: a fleet is measured as it runs for weeks, in its steady state. A worker
learns how long the server takes to show a fill or a close (``multirun.api.polls.Learned``)
from its first two confirmations of each kind, which poll on the base schedule (about 4
reads each instead of 1-2); with only one tick before the window, those first
confirmations fell inside it and added about 1.3 requests per tick (5.5 instead of 4.2).
``--warmup 1`` measures that start-up phase instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_ticks  # noqa: E402
from bench.scale import ACCOUNT, start_sim, stop_and_time, tree, wait_for  # noqa: E402
from multirun.core import procutil  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402

SEEDPLUS = ROOT / "bench" / "seedplus.py"


@dataclass
class Side:
    """One side's figures over one window."""

    cpu_pct: float  # of one core, every process of the side (multirun: supervisor included)
    cpu_ms_per_tick: float
    requests_per_tick: float
    sim_cpu_pct: float
    per_tick: dict[str, float] = field(default_factory=dict)  # requests by endpoint


def _sim_requests(url: str) -> Counter[str]:
    """The simulator's API requests so far, by endpoint."""
    root = url.split("/rest/")[0]
    with urllib.request.urlopen(root + "/sim/stats", timeout=10) as reply:
        counts = json.load(reply)["requests"]
    return Counter({name: n for name, n in counts.items() if not name.startswith("sim/")})


def _cpu_s(pids: list[int]) -> float:
    return sum(cpu_ticks(pid) or 0 for pid in pids) / os.sysconf("SC_CLK_TCK")


def start_multirun(
    url: str, n: int, interval: int, workdir: Path, source: Path = ROOT
) -> subprocess.Popen[bytes]:
    state = workdir / "state"
    config = workdir / "runner.yaml"
    text = f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 60\naccounts:\n"
    text += "".join(ACCOUNT.format(i=i, interval=f"{interval}") for i in range(n))
    config.write_text(text)
    with (workdir / "multirun.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "multirun", "start", str(config)],
            cwd=source,  # -m puts the working directory first on sys.path, before PYTHONPATH
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(source)},
        )  # fmt: skip


def start_seedplus(url: str, n: int, interval: int, workdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        args = [url, f"sp-{i:03d}", f"sp-key-{i:03d}", f"SP-{i:03d}", str(interval),
                str(workdir / f"sp-{i:03d}.sqlite"), str(i)]  # fmt: skip
        with (workdir / f"sp-{i:03d}.log").open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, str(SEEDPLUS), *args], stdout=out,
                                          stderr=subprocess.STDOUT))  # fmt: skip
    return procs


def one_run(n: int, interval: int, window: float, workdir: Path,
            sources: list[Path], warmup: int = 6) -> list[Side]:  # fmt: skip
    """One repetition: a Side per multirun tree in ``sources``, then seedplus's."""
    sides = [f"m{k}" for k in range(len(sources))] + ["s"]
    for side in sides:
        (workdir / side).mkdir()
    sims = [start_sim(20, workdir / side) for side in sides]
    urls = [url for _, url in sims]
    fleets = [start_multirun(urls[k], n, interval, workdir / f"m{k}", source)
              for k, source in enumerate(sources)]  # fmt: skip
    seeds = start_seedplus(urls[-1], n, interval, workdir / "s")
    statuses = [StateDir(workdir / f"m{k}" / "state").account(f"acct-{i:03d}").status
                for k in range(len(sources)) for i in range(n)]  # fmt: skip
    logs = [workdir / "s" / f"sp-{i:03d}.log" for i in range(n)]
    try:
        for k, fleet in enumerate(fleets):
            if fleet.poll() is not None:
                tail = (workdir / f"m{k}" / "multirun.log").read_text()[-3000:]
                raise SystemExit(f"deployed_cpu: multirun start exited early:\n{tail}")
        wait_for(f"every worker ticked {warmup} times", lambda: all(
            ((procutil.read_json(p) or {}).get("ticks") or 0) >= warmup for p in statuses),
            300 + warmup * interval)  # fmt: skip
        wait_for("every loop ran a round", lambda: all("round" in p.read_text() for p in logs), 300)
        for log in logs:
            if "Error" in log.read_text() or "seedplus:" in log.read_text():
                raise SystemExit(f"deployed_cpu: {log} failed:\n{log.read_text()[-2000:]}")
        groups = [tree([fleet.pid]) for fleet in fleets] + [[p.pid for p in seeds]]
        groups += [[sim.pid] for sim, _ in sims]
        before = [_cpu_s(group) for group in groups]
        asked = [_sim_requests(url) for url in urls]
        time.sleep(window)
        after = [_cpu_s(group) for group in groups]
        asked = [_sim_requests(url) - was for url, was in zip(urls, asked, strict=True)]
    finally:
        stop_and_time([*fleets, *seeds], 120)
        for sim, _ in sims:
            sim.send_signal(signal.SIGTERM)
            sim.wait(timeout=30)
    used = [a - b for a, b in zip(after, before, strict=True)]
    ticks = n * window / interval
    count = len(sides)
    return [
        Side(
            100 * used[i] / window,
            1000 * used[i] / ticks,
            sum(asked[i].values()) / ticks,
            100 * used[i + count] / window,
            {name: round(c / ticks, 2) for name, c in sorted(asked[i].items())},
        )
        for i in range(count)
    ]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def report(runs: list[list[Side]], labels: list[str], n: int, interval: int,
           window: float) -> tuple[str, dict]:  # fmt: skip
    """The table and figures; ``labels`` name the multirun trees (seedplus is last)."""
    ratios = [[run[k].cpu_pct / run[-1].cpu_pct for run in runs] for k in range(len(labels))]
    rows = [("CPU while ticking (% core)", "cpu_pct"), ("CPU per account-tick (ms)",
            "cpu_ms_per_tick"), ("requests per tick", "requests_per_tick"),
            ("its simulator's CPU (% core)", "sim_cpu_pct")]  # fmt: skip
    names = [*labels, "seedplus"]
    lines = [
        f"{n} multirun accounts beside {n} bench/seedplus.py loops, every {interval} s, "
        f"{window:g} s windows, {len(runs)} reps (median [min-max])",
        f"{'':32}" + "".join(f"{name:>22}" for name in names),
    ]
    for label, key in rows:
        cells = [spread([getattr(run[k], key) for run in runs]) for k in range(len(names))]
        lines.append(f"{label:32}" + "".join(f"{cell:>22}" for cell in cells))
    for k, name in enumerate(names):
        last = runs[-1][k].per_tick
        lines.append(f"{name} requests per tick (last rep): " + ", ".join(
            f"{endpoint} {c:.2f}" for endpoint, c in last.items()))  # fmt: skip
    for name, ratio in zip(labels, ratios, strict=True):
        lines.append(f"ratio {name} / seedplus (CPU): {spread(ratio)}")
    first = ratios[0]
    figures = {
        "accounts": n, "interval_s": interval, "window_s": window,
        "ratio": statistics.median(first), "ratio_min": min(first), "ratio_max": max(first),
        "ratios": {name: statistics.median(r) for name, r in zip(labels, ratios, strict=True)},
        "runs": [{name: asdict(side) for name, side in zip(names, run, strict=True)}
                 for run in runs],
    }  # fmt: skip
    return "\n".join(lines), figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=6, help="ticks of every worker before the window"
    )
    parser.add_argument(
        "--tree",
        type=Path,
        action="append",
        help="run multirun from this source tree; twice: both side by side (before/after)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = args.tree or [ROOT]
    labels = ["multirun"] if len(sources) == 1 else [f"multirun {p.name}" for p in sources]
    runs = []
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(
                one_run(args.accounts, args.interval, args.window, Path(tmp), sources, args.warmup)
            )
    table, figures = report(runs, labels, args.accounts, args.interval, args.window)
    print(json.dumps({**figures, "table": table}, indent=2) if args.json else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
