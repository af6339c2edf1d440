"""N accounts under one multirun supervisor next to N seed-style scripts, in one run.

    python bench/scale.py [--accounts 50] [--interval 5] [--idle-window 20] [--no-seed]
                          [--skip S] [--against DIR] [--json]

Starts ``multirun sim`` as its own process (so its CPU is measured too), then:

1. multirun: writes a runner.yaml of N accounts (strategy ``random``, every
   ``--interval`` seconds, ``on_stop: close``) pointing at the simulator and runs
   ``multirun start`` as a subprocess (the real supervisor: one forked worker per account);
2. seed-style: N processes, each a fresh ``python -c`` interpreter importing requests and
   running ALGOGENE's example loop (its bugs fixed minimally: ``import json``, request
   timeouts, a failed open does not crash it, a closed trade is not closed again) at the
   same interval against the same simulator.

For each it reports the time until all N are up (multirun: every worker wrote a status
file saying RUNNING, i.e. start-up reconciliation done; seed: every script finished its
imports) and until all N have ticked once (multirun ticks on the interval's grid, so up to
one interval later), the total proportional set size (PSS, /proc/PID/smaps_rollup) of the
process tree, the CPU while ticking over ``--idle-window`` seconds (utime + stime from
/proc/PID/stat; the strategy trades on about two ticks in three), the simulator's CPU over
the same window, and the time from SIGTERM to every process gone (multirun: on_stop close
of every open trade included). Then the ratios. ``--skip S`` starts multirun's window S
seconds after all ticked: with ``--interval 60 --skip 5 --idle-window 45`` it holds no
tick, the CPU of 50 accounts waiting between ticks. The two sets run one after the other, so
they never compete for the CPU. ``--against DIR`` runs multirun from another source tree
too (a ``git worktree`` of the code before a change), right after this one's, against
the same simulator, and prints its column and the ratio: a change's before/after
measured side by side in one run. Linux only.
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
from multirun.core import procutil  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402

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
    cpu_pct: float  # while ticking, of one core, averaged over the window
    processes: int
    sim_cpu_pct: float = 0.0  # the simulator's, over the same window
    stop_s: float = 0.0  # SIGTERM to every process gone
    supervisor_pss_mib: float = 0.0  # multirun: the supervisor's own share of the totals
    supervisor_cpu_pct: float = 0.0
    supervisor_start_cpu_ms: float = 0.0  # from exec until every worker ticked once
    exit_code: int = 0


POLL_S = 0.1


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"scale: {what} not reached within {timeout:g} s")
        time.sleep(POLL_S)
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

    def total(self, exclude: int) -> tuple[float, float, int]:
        pids = [pid for pid in self.pss_mib if pid != exclude]
        pss = sum(self.pss_mib[pid] for pid in pids)
        return pss, sum(self.cpu_pct[pid] for pid in pids), len(pids)


def measure(pids: list[int], window: float) -> Usage:
    """PSS (MiB) of each process, and its CPU % of one core over ``window`` seconds."""
    before = {pid: cpu_ticks(pid) or 0 for pid in pids}
    time.sleep(window)  # the measurement window itself
    after = {pid: cpu_ticks(pid) for pid in pids}
    hertz = os.sysconf("SC_CLK_TCK")
    cpu = {p: 100.0 * ((after[p] or before[p]) - before[p]) / hertz / window for p in pids}
    pss = {pid: (pss_kib(pid) or 0) / 1024 for pid in pids}
    return Usage(pss, cpu)


def start_sim(fill_delay_ms: int, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``multirun sim`` on a free port, and its base URL (its first line of output)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", "sim", "--port", "0",
         "--fill-delay-ms", str(fill_delay_ms)],
        stdout=subprocess.PIPE, stderr=(workdir / "sim.log").open("wb"),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"scale: multirun sim did not start; see {workdir / 'sim.log'}")
    return proc, url


def stop_and_time(procs: list[subprocess.Popen[bytes]], timeout: float) -> float:
    """SIGTERM each process, then the seconds until every one (and its children) is gone."""
    pids = tree([p.pid for p in procs])
    start = time.monotonic()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=timeout)
    wait_for("every process gone", lambda: not any(_alive(pid) for pid in pids), timeout)
    return time.monotonic() - start


def _alive(pid: int) -> bool:
    return cpu_ticks(pid) is not None  # a reaped or vanished pid has no /proc entry


def run_multirun(url: str, sim_pid: int, n: int, interval: int, window: float,
                 workdir: Path, skip: float = 0.0, root: Path = ROOT) -> Figures:  # fmt: skip
    """``multirun start`` of N accounts, multirun imported from ``root``'s tree."""
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "state"
    config = workdir / "runner.yaml"
    text = f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 60\naccounts:\n"
    text += "".join(ACCOUNT.format(i=i, interval=interval) for i in range(n))
    config.write_text(text)
    layout = StateDir(state)
    paths = [layout.account(f"acct-{i:03d}").status for i in range(n)]

    def statuses() -> list[dict]:
        return [procutil.read_json(path) or {} for path in paths]

    start = time.monotonic()
    with (workdir / "multirun.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "multirun", "start", str(config)], cwd=root,  # -m: cwd first
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
    try:
        running = lambda: all(s.get("state") == "RUNNING" for s in statuses())  # noqa: E731
        up = wait_for("all workers RUNNING", running, 300) - start
        ticked = wait_for("all ticked", lambda: all(s.get("ticks") for s in statuses()), 300)
        start_cpu = (cpu_ticks(proc.pid) or 0) / os.sysconf("SC_CLK_TCK")
        time.sleep(skip)  # --skip: past the first ticks, so the window is between ticks
        usage = measure(tree([proc.pid, sim_pid]), window)
    finally:
        stop_s = stop_and_time([proc], 120)
    code = proc.returncode
    if code != 0:
        print(f"scale: multirun start exited {code}; see {workdir / 'multirun.log'}")
    pss, cpu, count = usage.total(exclude=sim_pid)
    figures = Figures(up, ticked - start, pss, pss / n, cpu, count, usage.cpu_pct[sim_pid])
    figures.stop_s = stop_s
    figures.supervisor_pss_mib = usage.pss_mib[proc.pid]
    figures.supervisor_cpu_pct = usage.cpu_pct[proc.pid]
    figures.supervisor_start_cpu_ms = 1000 * start_cpu
    figures.exit_code = code
    return figures


def run_seeds(url: str, sim_pid: int, n: int, interval: int, window: float,
              workdir: Path) -> Figures:  # fmt: skip
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
        up = wait_for("all seeds up", lambda: lines("up"), 300) - start
        ticked = wait_for("all seeds ticked", lambda: lines("round"), 300) - start
        usage = measure([p.pid for p in procs] + [sim_pid], window)
    finally:
        stop_s = stop_and_time(procs, 60)
    pss, cpu, count = usage.total(exclude=sim_pid)
    figures = Figures(up, ticked, pss, pss / n, cpu, count, usage.cpu_pct[sim_pid])
    figures.stop_s = stop_s
    return figures


def report(multirun: Figures, seed: Figures | None, n: int, interval: int,
           against: Figures | None = None, against_name: str = "") -> str:  # fmt: skip
    table = seed_table(multirun, seed, n, interval)
    lines = [table]
    if seed is not None:
        ratio = multirun.pss_per_account_mib / seed.pss_per_account_mib
        verdict = "met" if ratio <= PSS_TARGET else "NOT met"
        lines.append(f"PSS per account / seed-style: {ratio:.2f} (issue 27: <= {PSS_TARGET:g}, "
                     f"{verdict})")  # fmt: skip
    if against is not None:
        lines.append(against_table(multirun, against, against_name))
    return "\n".join(lines)


PSS_TARGET = 0.65  # issue 27: PSS per account at 50 accounts / the seed-style script's


def against_table(ours: Figures, theirs: Figures, name: str) -> str:
    """This tree next to ``--against``'s, measured in the same run."""
    accounts = max(1, ours.processes - 1)  # the supervisor's and its workers'
    rows = [
        ("time until all up (s)", ours.up_s, theirs.up_s),
        ("SIGTERM to all gone (s)", ours.stop_s, theirs.stop_s),
        ("PSS per account (MiB)", ours.pss_per_account_mib, theirs.pss_per_account_mib),
        ("supervisor PSS (MiB)", ours.supervisor_pss_mib, theirs.supervisor_pss_mib),
        ("CPU while ticking (% core)", ours.cpu_pct, theirs.cpu_pct),
        ("supervisor CPU to ticked (ms/acct)", ours.supervisor_start_cpu_ms / accounts,
         theirs.supervisor_start_cpu_ms / accounts),
    ]  # fmt: skip
    lines = [f"this tree against {name} (same simulator, one after the other):",
             f"{'':36}{'this':>10}{'against':>10}{'ratio':>8}"]  # fmt: skip
    for label, a, b in rows:
        ratio = f"{a / b:.3f}" if b else "-"
        lines.append(f"{label:36}{a:10.2f}{b:10.2f}{ratio:>8}")
    return "\n".join(lines)


def seed_table(multirun: Figures, seed: Figures | None, n: int, interval: int) -> str:
    rows = [
        ("time until all up (s)", multirun.up_s, seed and seed.up_s),
        ("time until all ticked (s)", multirun.ticked_s, seed and seed.ticked_s),
        ("SIGTERM to all gone (s)", multirun.stop_s, seed and seed.stop_s),
        ("total PSS (MiB)", multirun.pss_mib, seed and seed.pss_mib),
        ("PSS per account (MiB)", multirun.pss_per_account_mib, seed and seed.pss_per_account_mib),
        ("CPU while ticking (% core)", multirun.cpu_pct, seed and seed.cpu_pct),
        ("simulator CPU (% core)", multirun.sim_cpu_pct, seed and seed.sim_cpu_pct),
        ("CPU incl. simulator (% core)", multirun.cpu_pct + multirun.sim_cpu_pct,
         seed and seed.cpu_pct + seed.sim_cpu_pct),
    ]  # fmt: skip
    seeds = f"seed-style: {seed.processes} interpreters" if seed else "seed-style: not run"
    lines = [
        f"{n} accounts, interval {interval} s; multirun: {multirun.processes} processes "
        f"(supervisor + workers), {seeds}",
        f"{'':30}{'multirun':>12}{'seed-style':>12}{'ratio':>10}",
    ]
    for label, ours, theirs in rows:
        ratio = f"{ours / theirs:.2f}" if theirs else "-"
        other = f"{theirs:12.2f}" if theirs is not None else f"{'-':>12}"
        lines.append(f"{label:30}{ours:12.2f}{other}{ratio:>10}")
    lines.append("ratio = multirun / seed-style (below 1: multirun uses less)")
    lines.append(
        f"multirun's supervisor alone: {multirun.supervisor_pss_mib:.2f} MiB PSS, "
        f"{multirun.supervisor_cpu_pct:.2f} % CPU while ticking, "
        f"{multirun.supervisor_start_cpu_ms / n:.2f} ms CPU per account until all ticked; "
        f"multirun start exit code {multirun.exit_code}"
    )
    return "\n".join(lines)


def run(accounts: int, interval: int, window: float, seeds: bool,
        fill_delay_ms: int = 20, skip: float = 0.0) -> tuple[Figures, Figures | None]:  # fmt: skip
    """Both sets against one ``multirun sim`` process; the seed figures are None without
    ``seeds``."""
    ours, theirs, _ = run_all(accounts, interval, window, seeds, fill_delay_ms, skip)
    return ours, theirs


def run_all(accounts: int, interval: int, window: float, seeds: bool, fill_delay_ms: int = 20,
            skip: float = 0.0, against: Path | None = None,
            ) -> tuple[Figures, Figures | None, Figures | None]:  # fmt: skip
    """:func:`run`, and multirun from the ``against`` tree after this one's (None without)."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sim, url = start_sim(fill_delay_ms, workdir)
        try:
            ours = run_multirun(url, sim.pid, accounts, interval, window, workdir, skip)
            other = None
            if against is not None:
                other = run_multirun(url, sim.pid, accounts, interval, window,
                                     workdir / "against", skip, root=against)  # fmt: skip
            theirs = run_seeds(url, sim.pid, accounts, interval, window, workdir) if seeds else None
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(timeout=30)
    return ours, theirs, other


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--idle-window", type=float, default=20.0)
    parser.add_argument("--no-seed", action="store_true", help="Skip the seed-style set.")
    parser.add_argument("--skip", type=float, default=0.0,
                        help="multirun: seconds between all ticked and the window")  # fmt: skip
    parser.add_argument("--against", type=Path, default=None,
                        help="another source tree (e.g. a git worktree of the code before a "
                        "change): its multirun is run too, in the same run")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    if not Path("/proc/self/smaps_rollup").exists():
        print("scale: needs Linux /proc (smaps_rollup)", file=sys.stderr)
        return 2
    if args.against is not None and not (args.against / "multirun").is_dir():
        print(f"scale: --against {args.against}: no multirun package there", file=sys.stderr)
        return 2
    ours, theirs, other = run_all(
        args.accounts, args.interval, args.idle_window, not args.no_seed, skip=args.skip,
        against=args.against,
    )  # fmt: skip
    name = str(args.against)
    table = report(ours, theirs, args.accounts, args.interval, other, name)
    if args.json:
        figures = {"accounts": args.accounts, "interval_s": args.interval,
                   "multirun": asdict(ours), "seed": theirs and asdict(theirs),
                   "against": other and asdict(other), "table": table}  # fmt: skip
        print(json.dumps(figures, indent=2))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
