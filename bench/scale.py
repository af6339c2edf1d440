"""N accounts under one multirun supervisor next to N seed-style scripts, in one run.

    python bench/scale.py [--accounts 50] [--interval 5] [--idle-window 20] [--json]

Starts an in-process simulator, then:

1. multirun: writes a runner.yaml of N accounts (strategy ``random``, every
   ``--interval`` seconds, ``on_stop: close``) pointing at the simulator and runs
   ``multirun start`` as a subprocess (the real supervisor: one forked worker per account);
2. seed-style: N processes, each a fresh ``python -c`` interpreter importing requests and
   running ALGOGENE's example loop (its bugs fixed minimally: ``import json``, request
   timeouts, a failed open does not crash it, a closed trade is not closed again) at the
   same interval against the same simulator.

For each it reports the time until all N are up (multirun: every worker wrote its first
status file; seed: every script finished its imports) and until all N have ticked once
(multirun ticks on the interval's grid, so up to one interval later), the total
proportional set size (PSS, /proc/PID/smaps_rollup) of the process tree, and the idle
CPU over ``--idle-window`` seconds (utime + stime from /proc/PID/stat), then the ratios.
The two sets run one after the other, so they never compete for the CPU. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_ticks, descendants, pss_kib  # noqa: E402
from multirun import procutil  # noqa: E402
from multirun.sim import SimConfig, SimServer  # noqa: E402
from multirun.statedir import StateDir  # noqa: E402

ACCOUNT = """\
  - name: acct-{i:03d}
    user: bench-{i:03d}
    api_key: bench-key-{i:03d}
    accountid: BENCH-{i:03d}
    runmode: livetest
    strategy: random
    params:
      seed: {i}
    instrument: BTCUSD
    volume: 1
    interval: {interval}s
    on_stop: close
    max_orders_per_hour: 100000
"""

# ALGOGENE's example script (shared/seeds), its loop at --interval instead of 60 s.
# Minimal fixes: `import json` (missing), timeouts, a failed open_order does not raise,
# the closed trade is forgotten; one line printed once imported and after each round.
SEED = r"""
import json, random, sys
import requests
from datetime import datetime, timedelta
from time import sleep

base_url, user, api_key, accountid, interval = sys.argv[1:6]
interval = int(interval)
runmode = "livetest"
print("up", flush=True)

def get_session_token():
    data = {"api_key": api_key, "user": user}
    return requests.get(base_url + "/session", params=data, timeout=10).json()

def open_order(instrument, buysell, volume, orderRef=""):
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "instrument": instrument, "buysell": buysell, "volume": volume,
            "orderRef": orderRef, "ordertype": "MKT", "token": token}
    return requests.post(base_url + "/open_order", data=json.dumps(data), timeout=10).json()

def close_order(tradeID):
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "tradeIDs": tradeID, "token": token}
    return requests.post(base_url + "/close_orders", data=json.dumps(data), timeout=10).json()

def query_order(tradeID):
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "tradeID": tradeID, "token": token}
    return requests.get(base_url + "/opened_trades", params=data, timeout=10).json()

token, token_expiry = "", ""
tradeID = ""
dt = datetime.utcnow() - timedelta(minutes=60)
while True:
    if datetime.utcnow() >= dt + timedelta(seconds=interval):
        dt = datetime.utcnow()
        if str(dt) > token_expiry:
            res = get_session_token()
            token = res["res"]["token"]
            token_expiry = res["res"]["expired_utc"]
        if tradeID != "":
            query_order(tradeID)
            close_order(tradeID)
            tradeID = ""
        buysell = random.choice(["BUY", "SELL", ""])
        if buysell != "":
            res = open_order(instrument="BTCUSD", buysell=buysell, volume=1)
            tradeID = res.get("tradeID", "")
        print("round", flush=True)
    sleep(1)
"""


@dataclass
class Figures:
    up_s: float
    ticked_s: float
    pss_mib: float
    pss_per_account_mib: float
    idle_cpu_pct: float  # of one core, averaged over the window
    processes: int
    supervisor_pss_mib: float = 0.0  # multirun: the supervisor's own share of the totals
    supervisor_cpu_pct: float = 0.0


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"scale: {what} not reached within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic()


def tree(roots: list[int]) -> list[int]:
    pids = list(roots)
    for root in roots:
        pids += descendants(root)
    return pids


@dataclass
class Usage:
    pss_mib: dict[int, float]
    cpu_pct: dict[int, float]  # of one core, over the window

    def total(self) -> tuple[float, float, int]:
        return sum(self.pss_mib.values()), sum(self.cpu_pct.values()), len(self.pss_mib)


def measure(pids: list[int], window: float) -> Usage:
    """PSS (MiB) of each process, and its CPU % of one core over ``window`` seconds."""
    before = {pid: cpu_ticks(pid) or 0 for pid in pids}
    time.sleep(window)  # the measurement window itself
    after = {pid: cpu_ticks(pid) for pid in pids}
    hertz = os.sysconf("SC_CLK_TCK")
    cpu = {p: 100.0 * ((after[p] or before[p]) - before[p]) / hertz / window for p in pids}
    pss = {pid: (pss_kib(pid) or 0) / 1024 for pid in pids}
    return Usage(pss, cpu)


def run_multirun(url: str, n: int, interval: int, window: float, workdir: Path) -> Figures:
    state = workdir / "state"
    config = workdir / "runner.yaml"
    text = f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 60\naccounts:\n"
    text += "".join(ACCOUNT.format(i=i, interval=interval) for i in range(n))
    config.write_text(text)
    names = [f"acct-{i:03d}" for i in range(n)]

    def statuses() -> list[dict]:
        layout = StateDir(state)
        return [procutil.read_json(layout.account(name).status) or {} for name in names]

    start = time.monotonic()
    with (workdir / "multirun.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from multirun.cli import main; main()", "start", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    try:
        up = wait_for("all workers up", lambda: all(statuses()), 120) - start
        ticked = wait_for("all ticked", lambda: all(s.get("ticks") for s in statuses()), 120)
        usage = measure(tree([proc.pid]), window)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    if code != 0:
        print(f"scale: multirun start exited {code}; see {workdir / 'multirun.log'}")
    pss, cpu, count = usage.total()
    figures = Figures(up, ticked - start, pss, pss / n, cpu, count)
    figures.supervisor_pss_mib = usage.pss_mib[proc.pid]
    figures.supervisor_cpu_pct = usage.cpu_pct[proc.pid]
    return figures


def run_seeds(url: str, n: int, interval: int, window: float, workdir: Path) -> Figures:
    logs = [workdir / f"seed-{i:03d}.log" for i in range(n)]
    procs = []
    start = time.monotonic()
    for i, log in enumerate(logs):
        args = [url, f"seed-{i:03d}", f"seed-key-{i:03d}", f"SEED-{i:03d}", str(interval)]
        with log.open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-c", SEED, *args], stdout=out,
                                          stderr=subprocess.STDOUT))  # fmt: skip

    def lines(word: str) -> bool:
        return all(word in log.read_text() for log in logs)

    try:
        up = wait_for("all seeds up", lambda: lines("up"), 120) - start
        ticked = wait_for("all seeds ticked", lambda: lines("round"), 120) - start
        pss, cpu, count = measure([p.pid for p in procs], window).total()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
    return Figures(up, ticked, pss, pss / n, cpu, count)


def report(multirun: Figures, seed: Figures, n: int, interval: int) -> str:
    rows = [
        ("time until all up (s)", multirun.up_s, seed.up_s),
        ("time until all ticked (s)", multirun.ticked_s, seed.ticked_s),
        ("total PSS (MiB)", multirun.pss_mib, seed.pss_mib),
        ("PSS per account (MiB)", multirun.pss_per_account_mib, seed.pss_per_account_mib),
        ("idle CPU (% of one core)", multirun.idle_cpu_pct, seed.idle_cpu_pct),
    ]
    lines = [
        f"{n} accounts, interval {interval} s; multirun: {multirun.processes} processes "
        f"(supervisor + workers), seed-style: {seed.processes} interpreters",
        f"{'':28}{'multirun':>12}{'seed-style':>12}{'ratio':>10}",
    ]
    for label, ours, theirs in rows:
        ratio = f"{ours / theirs:.2f}" if theirs else "-"
        lines.append(f"{label:28}{ours:12.2f}{theirs:12.2f}{ratio:>10}")
    lines.append("ratio = multirun / seed-style (below 1: multirun uses less)")
    lines.append(
        f"multirun's supervisor alone: {multirun.supervisor_pss_mib:.2f} MiB PSS, "
        f"{multirun.supervisor_cpu_pct:.2f} % CPU"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--idle-window", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    if not Path("/proc/self/smaps_rollup").exists():
        print("scale: needs Linux /proc (smaps_rollup)", file=sys.stderr)
        return 2
    with SimServer(SimConfig(fill_delay_ms=20)) as sim, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ours = run_multirun(sim.base_url, args.accounts, args.interval, args.idle_window, workdir)
        theirs = run_seeds(sim.base_url, args.accounts, args.interval, args.idle_window, workdir)
    if args.json:
        print(json.dumps({"accounts": args.accounts, "interval_s": args.interval,
                          "multirun": asdict(ours), "seed": asdict(theirs)}, indent=2))  # fmt: skip
    else:
        print(report(ours, theirs, args.accounts, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
