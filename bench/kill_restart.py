"""SIGKILL a worker at random instants, restart it, and check the simulator's ledger.

    python bench/kill_restart.py [--cycles 100] [--seed 1] [--interval 1] [--latency-ms 20]

Runs an in-process simulator and, ``--cycles`` times, a real ``multirun run-account``
process (strategy ``random``, which trades on every tick) that is SIGKILLed at a random
instant: 45% of the kills are aimed inside a tick (just after its grid time, while it
closes and opens trades), 40% anywhere once it ticks, 15% during start-up (while it
logs in and reconciles its journal). Then one last worker is stopped with SIGTERM
(``on_stop: close``). Done when the ledger holds no orderRef twice and none of the
account's trades is left open. Exit status 0 on success, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "crashy"
PREFIX = f"mr-{NAME}-"
CONFIG = """\
version: 1
server: sim
state_dir: {state_dir}
stop_timeout: 30
accounts:
  - name: {name}
    user: alice
    api_key: alice-key
    accountid: ACC-1
    runmode: livetest
    strategy: random
    params:
      seed: {seed}
    instrument: BTCUSD
    volume: 1
    interval: {interval}s
    on_stop: close
    max_orders_per_hour: 100000
    halt_after_failures: 1000
"""


@dataclass
class Result:
    cycles: int = 0
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    orders: int = 0
    duplicated_refs: list[str] = field(default_factory=list)
    left_open: list[str] = field(default_factory=list)
    final_exit: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.duplicated_refs and not self.left_open and self.final_exit == 0


def write_config(workdir: Path, *, seed: int = 1, interval: int = 1) -> Path:
    path = workdir / "runner.yaml"
    text = CONFIG.format(state_dir=workdir / "state", name=NAME, seed=seed, interval=interval)
    path.write_text(text, encoding="utf-8")
    return path


def start_worker(config: Path, server_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from multirun.cli.app import main; main()",
             "run-account", str(config), NAME, "--server", server_url],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip


def status(workdir: Path) -> dict[str, Any]:
    try:
        return json.loads((workdir / "state" / NAME / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_ticking(workdir: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> dict:
    """Wait until ``proc`` has reconciled and scheduled its next tick; its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = status(workdir)
        if now.get("pid") == proc.pid and now.get("next_tick_utc"):
            return now
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early with {proc.returncode}")
        time.sleep(0.01)
    raise TimeoutError("worker did not start ticking in time")


def kill_at_random(workdir: Path, proc: subprocess.Popen[bytes], rng: random.Random) -> str:
    """SIGKILL ``proc`` at a random instant; returns where the kill was aimed."""
    draw = rng.random()
    if draw < 0.15:
        where = "startup"  # while importing, logging in or reconciling
        target = time.time() + rng.uniform(0.0, 1.0)
    elif draw < 0.6:
        where = "tick"
        due = datetime.fromisoformat(wait_ticking(workdir, proc)["next_tick_utc"]).timestamp()
        target = due + rng.uniform(0.0, 0.3)  # a tick closes and opens within ~300 ms
    else:
        where = "anywhere"
        wait_ticking(workdir, proc)
        target = time.time() + rng.uniform(0.0, 1.5)
    time.sleep(max(0.0, target - time.time()))  # timing the kill, not synchronising
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return where


def check_ledger(ledger: list[dict[str, Any]], result: Result) -> None:
    ours = [o for o in ledger if str(o["orderRef"]).startswith(PREFIX)]
    counts = collections.Counter(o["orderRef"] for o in ours)
    result.orders = len(ours)
    result.duplicated_refs = sorted(ref for ref, n in counts.items() if n > 1)
    result.left_open = sorted(o["orderRef"] for o in ours if o["status"] in ("OPEN", "PENDING"))


def run_cycles(
    server_url: str, ledger: Any, workdir: Path, cycles: int, *, seed: int = 1, interval: int = 1
) -> Result:
    """``cycles`` kill/restart cycles, then a graceful stop; ``ledger()`` reads the sim."""
    rng = random.Random(seed)
    config = write_config(workdir, seed=seed, interval=interval)
    log = workdir / "workers.log"
    result = Result()
    began = time.monotonic()
    for _ in range(cycles):
        proc = start_worker(config, server_url, log)
        try:
            result.kills[kill_at_random(workdir, proc, rng)] += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result.cycles += 1
    proc = start_worker(config, server_url, log)
    first = wait_ticking(workdir, proc)
    deadline = time.monotonic() + 20
    while status(workdir).get("ticks", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # let it trade once more before stopping it
    assert first["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    result.final_exit = proc.wait(timeout=60)
    check_ledger(ledger(), result)
    result.seconds = time.monotonic() - began
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=int, default=1, help="tick interval, seconds")
    parser.add_argument("--workdir", type=Path, help="keep config, journal and logs here")
    parser.add_argument(
        "--latency-ms", type=float, default=20.0,
        help="simulator latency per call (plus as much jitter): kills land mid-request more",
    )  # fmt: skip
    args = parser.parse_args()

    from multirun.sim import SimConfig, SimServer

    with SimServer(SimConfig()) as sim, tempfile.TemporaryDirectory() as tmp:
        sim.set_faults(latency_ms=args.latency_ms, jitter_ms=args.latency_ms)
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run_cycles(
            sim.base_url, sim.ledger, workdir, args.cycles, seed=args.seed,
            interval=args.interval,
        )  # fmt: skip
    aimed = ", ".join(f"{n} {where}" for where, n in sorted(result.kills.items()))
    print(f"cycles:             {result.cycles} (kills aimed: {aimed})")
    print(f"orders in ledger:   {result.orders}")
    print(f"duplicated orders:  {len(result.duplicated_refs)} {result.duplicated_refs or ''}")
    print(f"open after stop:    {len(result.left_open)} {result.left_open or ''}")
    print(f"final exit status:  {result.final_exit}")
    print(f"elapsed:            {result.seconds:.1f} s")
    print("OK" if result.ok else "FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
