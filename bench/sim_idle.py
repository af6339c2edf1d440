"""Idle CPU of ``multirun sim``: this tree's simulator next to an older revision's.

    python bench/sim_idle.py [--window 20] [--against REV] [--repeat 3]

Starts ``multirun sim --port 0`` as a subprocess from this tree and, with ``--against``,
another from revision ``REV`` of this repository (exported with ``git archive`` to a
temporary directory), both at once so they share the machine's load; no client talks to
either. Over ``--window`` seconds it reads each one's CPU (utime + stime from
/proc/PID/stat, 10 ms resolution) and its number of voluntary context switches (each one
is a wake-up of a sleeping thread: a finer measure of polling than CPU ticks). Repeated
``--repeat`` times; medians printed with the ratio against ``REV``. Linux only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_ticks  # noqa: E402


@dataclass
class Idle:
    cpu_pct: float  # of one core
    wakeups_per_s: float  # voluntary context switches, every thread


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` (/proc/PID/task/*/status)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except OSError:
            continue  # a thread that just ended
    return total


def start_sim(source: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from multirun.cli.app import main; main()", "sim", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(source)}, cwd=source,
    )  # fmt: skip
    assert proc.stdout is not None
    if not proc.stdout.readline().decode().startswith("http"):
        proc.kill()
        raise SystemExit(f"sim_idle: multirun sim from {source} did not start")
    return proc


def measure(procs: dict[str, subprocess.Popen[bytes]], window: float) -> dict[str, Idle]:
    time.sleep(1.0)  # past start-up
    before = {k: (cpu_ticks(p.pid) or 0, wakeups(p.pid)) for k, p in procs.items()}
    time.sleep(window)  # the measurement window itself
    after = {k: (cpu_ticks(p.pid) or 0, wakeups(p.pid)) for k, p in procs.items()}
    hertz = os.sysconf("SC_CLK_TCK")
    return {
        k: Idle(
            100.0 * (after[k][0] - before[k][0]) / hertz / window,
            (after[k][1] - before[k][1]) / window,
        )
        for k in procs
    }


def export(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "multirun", "schemas"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--against", help="a git revision whose simulator runs alongside")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sim-idle-") as tmp:
        sources = {"this tree": ROOT}
        if args.against:
            sources[f"at {args.against}"] = export(args.against, Path(tmp))
        runs: dict[str, list[Idle]] = {k: [] for k in sources}
        for _ in range(args.repeat):
            procs = {k: start_sim(src) for k, src in sources.items()}
            try:
                for k, idle in measure(procs, args.window).items():
                    runs[k].append(idle)
            finally:
                for proc in procs.values():
                    proc.terminate()
                    proc.wait(timeout=30)
    print(f"multirun sim, idle, {args.window:g} s x {args.repeat} (medians; CPU % of one core)")
    medians = {
        k: Idle(
            statistics.median(i.cpu_pct for i in v), statistics.median(i.wakeups_per_s for i in v)
        )
        for k, v in runs.items()
    }
    for k, m in medians.items():
        print(f"  {k:<22} CPU {m.cpu_pct:6.2f} %   wake-ups {m.wakeups_per_s:8.1f} /s")
    if args.against:
        new, old = medians["this tree"], medians[f"at {args.against}"]
        cpu = f"{old.cpu_pct / new.cpu_pct:.0f}x less" if new.cpu_pct else "all of it gone"
        woke = old.wakeups_per_s / max(new.wakeups_per_s, 1e-3)
        print(f"  ratio: CPU {cpu}; wake-ups {woke:,.0f}x fewer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
