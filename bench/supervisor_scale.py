"""The supervisor at N accounts: time until all up and RUNNING, time to stop, its own CPU.

    python bench/supervisor_scale.py [--accounts 500] [--interval 60] [--repeat 1]
                                     [--profile FILE] [--worker-profiles DIR] [--json]

Starts an in-process simulator, writes a runner.yaml of N accounts (strategy ``random``,
``on_stop: close``) and runs ``multirun start`` as a subprocess whose own CPU time
(``getrusage(RUSAGE_SELF)``: the supervisor's threads, not its children) is written at
exit. It reports, from the start of the subprocess:

- ``spawned``: every account has a pid in ``supervisor.json``;
- ``up``: every worker reconciled with the server and scheduled its first tick (its
  ``status.json`` names its next tick; the file it writes first, before any request,
  does not);
- ``running``: ``supervisor.json`` shows every account RUNNING (the worker said it is up,
  or ``startsecs`` passed) and every worker is up (as ``bench/fleet.py`` measures it);
- ``stop``: SIGTERM to ``multirun start`` until it exited (every worker applied on_stop);
- the supervisor's CPU seconds over the whole run, and per account (linear in accounts:
  the per-account figure stays flat as N grows).

Medians per N, then the range over the ``--repeat`` runs and whether every one met issue
27's bounds (all RUNNING within 10 s, stopped within 5 s).

``--profile FILE`` runs the supervisor under cProfile (CPU time) and writes its stats to FILE (read
with ``python -m pstats FILE``); ``--worker-profiles DIR`` profiles each worker's CPU time
from its start to its exit into ``DIR/NAME.prof``. Linux only.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import StartWatch  # noqa: E402
from bench.procstat import cpu_ticks, descendants  # noqa: E402
from bench.scale import ACCOUNT  # noqa: E402
from multirun.core import procutil  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.sim import SimConfig, SimServer  # noqa: E402

# The supervisor's entry point, writing its own CPU time (and a profile) when it exits.
SUPERVISOR = """\
import atexit, json, resource, sys
usage_file, profile_file, worker_profiles = sys.argv[1], sys.argv[2], sys.argv[3]
sys.argv = ["multirun", *sys.argv[4:]]
profiler = None
if worker_profiles:  # each worker's own cProfile, from its start to its exit
    import cProfile, os, time
    from multirun.supervisor import launch
    run_worker = launch.run_worker

    def profiled(runner, name, context):
        worker_profiler = cProfile.Profile(time.process_time)  # CPU: the machine is shared
        worker_profiler.enable()
        try:
            return run_worker(runner, name, context)
        finally:
            worker_profiler.disable()
            worker_profiler.dump_stats(os.path.join(worker_profiles, name + ".prof"))

    launch.run_worker = profiled
if profile_file:
    import cProfile, time
    profiler = cProfile.Profile(time.process_time)  # CPU: the machine is shared
    profiler.enable()

def done():
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_file)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(usage_file, "w") as out:
        json.dump({"cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}, out)

atexit.register(done)
from multirun.cli.app import main
main()
"""


@dataclass
class Run:
    accounts: int
    spawned_s: float
    up_s: float
    running_s: float
    stop_s: float
    supervisor_cpu_s: float
    exit_code: int
    worker_cpu_ms: float = 0.0  # per worker, from its fork until every worker was up
    sim_cpu_s: float = 0.0  # the simulator's (this process's) CPU until every worker was up

    @property
    def cpu_ms_per_account(self) -> float:
        return 1000 * self.supervisor_cpu_s / self.accounts


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"supervisor_scale: {what} not reached within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic()


def run_once(
    url: str, n: int, interval: int, workdir: Path, profile: str, worker_profiles: str = ""
) -> Run:
    state = workdir / "state"
    config = workdir / "runner.yaml"
    text = f"version: 1\nserver: {url}\nstate_dir: {state}\nstop_timeout: 60\naccounts:\n"
    text += "".join(ACCOUNT.format(i=i, interval=interval) for i in range(n))
    config.write_text(text)
    names = [f"acct-{i:03d}" for i in range(n)]
    layout = StateDir(state)
    usage_file = workdir / "usage.json"

    def accounts() -> dict[str, dict]:
        data = procutil.read_json(layout.supervisor_json) or {}
        found = data.get("accounts")
        return found if isinstance(found, dict) and len(found) == n else {}

    def spawned() -> bool:
        found = accounts()
        return bool(found) and all(a.get("pid") for a in found.values())

    watch = StartWatch(layout, names, time.monotonic())

    def up() -> bool:
        watch.up()
        return not watch.unscheduled

    def running() -> bool:
        return watch.up()

    sim_cpu_at = time.process_time()
    argv = [sys.executable, "-c", SUPERVISOR, str(usage_file), profile, worker_profiles]
    argv += ["start", str(config)]
    start = time.monotonic()
    with (workdir / "multirun.log").open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
    try:
        spawned_at = wait_for("all spawned", spawned, 300)
        up_at = wait_for("all up", up, 300)
        workers = [cpu_ticks(pid) or 0 for pid in descendants(proc.pid)]
        worker_cpu_ms = 1000 * sum(workers) / os.sysconf("SC_CLK_TCK") / n
        sim_cpu_s = time.process_time() - sim_cpu_at
        running_at = wait_for("all RUNNING", running, 300)
    finally:
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
    exited_at = time.monotonic()
    if code != 0:
        print(f"supervisor_scale: multirun start exited {code}; see {workdir / 'multirun.log'}")
    usage = json.loads(usage_file.read_text())
    return Run(
        n,
        spawned_at - start,
        up_at - start,
        running_at - start,
        exited_at - stop_at,
        usage["cpu_s"],
        code,
        worker_cpu_ms,
        sim_cpu_s,
    )


def report(runs: list[Run]) -> str:
    lines = [
        f"{'accounts':>8} {'spawned s':>10} {'up s':>8} {'RUNNING s':>10} {'stop s':>8} "
        f"{'sup. CPU s':>11} {'ms/account':>11} {'worker ms':>10} {'sim CPU s':>10}"
    ]
    by_n: dict[int, list[Run]] = {}
    for run in runs:
        by_n.setdefault(run.accounts, []).append(run)
    for n, group in by_n.items():

        def med(f: Callable[[Run], float], group: list[Run] = group) -> float:
            return statistics.median(f(r) for r in group)

        lines.append(
            f"{n:8d} {med(lambda r: r.spawned_s):10.2f} {med(lambda r: r.up_s):8.2f} "
            f"{med(lambda r: r.running_s):10.2f} {med(lambda r: r.stop_s):8.2f} "
            f"{med(lambda r: r.supervisor_cpu_s):11.2f} "
            f"{med(lambda r: r.cpu_ms_per_account):11.2f} "
            f"{med(lambda r: r.worker_cpu_ms):10.1f} {med(lambda r: r.sim_cpu_s):10.2f}"
        )
    for n, group in by_n.items():
        lines.append(spread(n, group))
    if len(by_n) > 1:
        first, last = min(by_n), max(by_n)
        per = {n: statistics.median(r.cpu_ms_per_account for r in by_n[n]) for n in (first, last)}
        lines.append(
            f"supervisor CPU per account at {last} / at {first}: {per[last] / per[first]:.2f} "
            "(1.0: linear in accounts)"
        )
    lines.append(f"medians of {len(runs) // max(1, len(by_n))} run(s) each")
    return "\n".join(lines)


# issue 27 at 500 accounts: all RUNNING within this long in every run, and stopped within.
RUNNING_TARGET_S = 10.0
STOP_TARGET_S = 5.0


def spread(n: int, group: list[Run]) -> str:
    """The range over the runs of ``n`` accounts, and whether every run met issue 27's bounds
    (judged at 500 accounts; shown for any N)."""
    running = [r.running_s for r in group]
    stops = [r.stop_s for r in group]
    met = max(running) < RUNNING_TARGET_S and max(stops) < STOP_TARGET_S
    return (
        f"{n} accounts, {len(group)} run(s): RUNNING {min(running):.2f}-{max(running):.2f} s, "
        f"stop {min(stops):.2f}-{max(stops):.2f} s; every run RUNNING < {RUNNING_TARGET_S:g} s "
        f"and stopped < {STOP_TARGET_S:g} s: {'met' if met else 'NOT met'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[500])
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", default="", help="cProfile the supervisor into this file.")
    parser.add_argument(
        "--worker-profiles",
        default="",
        help="cProfile each worker (start to exit) into DIR/NAME.prof.",
    )
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    parser.add_argument("--keep", default="", help="Keep each run's state dir under here.")
    args = parser.parse_args()
    runs = []
    with SimServer(SimConfig(fill_delay_ms=20)) as sim:
        for _ in range(args.repeat):
            for n in args.accounts:
                if args.keep:
                    workdir = Path(tempfile.mkdtemp(prefix=f"run{n}-", dir=args.keep))
                    runs.append(
                        run_once(
                            sim.base_url,
                            n,
                            args.interval,
                            workdir,
                            args.profile,
                            args.worker_profiles,
                        )
                    )
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(
                        run_once(
                            sim.base_url,
                            n,
                            args.interval,
                            Path(tmp),
                            args.profile,
                            args.worker_profiles,
                        )
                    )
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
    else:
        print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
