"""Stops at unlucky moments under chaos: does every stop close its trades or name them?

    python bench/chaos.py [--stops 200] [--accounts 3] [--parallel 3] [--seed 1]

Starts one simulator in this process (127.0.0.1, port 0) faulting ``--fault-rate`` of the
requests (5xx replies, dropped connections, malformed replies, revoked tokens, replies
held past the client's read timeout, and trickled replies when the simulator has them),
then runs ``--parallel`` lanes, each starting one real ``multirun start`` after another
until ``--stops`` supervisors have been stopped. Each supervisor has its own state_dir
and 1..``--accounts`` accounts (fresh names and ALGOGENE accountids) running a strategy
that flips side every second; some accounts run a variant that now and then hangs in
``on_tick``. Before the stop a worker may be SIGKILLed or SIGSTOPped (and perhaps
SIGCONTed), and the stop itself (SIGTERM or SIGINT to the supervisor) is aimed at one
of: ``backoff`` (just after a worker's SIGKILL, while it waits to restart),
``reconcile`` (just after its restart, while it reconciles), ``mid-tick`` (a random
instant within a tick's second) or ``anytime``. Then the bench waits (bounded) for the
supervisor to exit and judges the stop with the simulator's ledger: trades of its
accounts still open, whether its output names each of them, its exit status, its
journals, and its processes still alive (see ``bench/chaos_judge.py``).

Exit status 0 when no orderRef was sent twice, nothing was lost, every trade left open
was named and made the exit status non-zero, no process outlived its supervisor and no
supervisor had to be killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos_judge import StopResult, Tally, judge, orphans  # noqa: E402
from multirun.sim import FaultSettings, SimConfig, SimServer  # noqa: E402

API_KEY = "chaos-secret-api-key-0123"
INSTRUMENTS = ("BTCUSD", "ETHUSD", "EURUSD", "USDJPY", "XAUUSD", "GBPUSD")
KINDS = ("backoff", "reconcile", "mid-tick", "anytime")
# Shares of the fault rate, by kind; the share of a kind the simulator on disk does not
# have (trickle, huge: newer) goes to the others.
FAULT_WEIGHTS = {
    "error_rate": 5,
    "drop_rate": 3,
    "malformed_rate": 3,
    "revoke_rate": 3,
    "slow_success_rate": 2,
    "trickle_rate": 2,
    "huge_rate": 1,
}
STRATEGY = '''\
"""The chaos bench's strategies: flip side every tick; the Hanging one sometimes hangs."""

import random
import time


class Flip:
    def __init__(self, params=None):
        self.params = dict(params or {})

    def on_tick(self, ctx):
        return "SELL" if ctx.position > 0 else "BUY"


class Hanging(Flip):
    def on_tick(self, ctx):
        if random.random() < float(self.params.get("hang_probability", 0.05)):
            time.sleep(10**6)  # a strategy stuck for good
        return super().on_tick(ctx)
'''
CONFIG = """\
version: 1
server: {url}
state_dir: {state_dir}
stop_timeout: {stop_timeout:g}
{top_extra}defaults:
  user: chaos
  api_key: {api_key}
  runmode: livetest
  volume: 0.01
  interval: 1s
  on_stop: close
  halt_after_failures: 100000
  max_orders_per_hour: 100000
{account_extra}accounts:
{accounts}
"""


@dataclass(frozen=True)
class Options:
    stops: int = 200
    accounts: int = 3  # each supervisor runs 1..accounts accounts
    parallel: int = 12
    seed: int = 1
    fault_rate: float = 0.4
    hold_ms: float = 12_000.0  # held replies: past the client's 10 s read timeout
    stop_timeout: float = 15.0
    run_s: tuple[float, float] = (0.5, 4.0)  # how long a supervisor trades before the chaos
    hang_probability: float = 0.05  # per tick, for accounts running the Hanging strategy
    tick_timeout: str = "3s"  # used when the schema has the field
    kinds: tuple[str, ...] = KINDS
    workdir: Path | None = None
    echo: Callable[[str], None] | None = print


# --- what the tree on disk supports -----------------------------------------------------------


def fault_settings(rate: float, hold_ms: float) -> dict[str, float]:
    """``rate`` of the requests faulted, spread over every fault kind the simulator has."""
    known = {f.name for f in dataclasses.fields(FaultSettings)}
    weights = {k: w for k, w in FAULT_WEIGHTS.items() if k in known}
    total = sum(weights.values())
    settings = {k: rate * w / total for k, w in weights.items()}
    settings["slow_success_ms"] = hold_ms
    return settings


def schema_fields() -> tuple[set[str], set[str]]:
    """The top-level and per-account fields of the runner schema on disk."""
    schema = json.loads((ROOT / "schemas" / "runner.schema.json").read_text())
    props = schema.get("properties", {})
    return set(props), set(props.get("defaults", {}).get("properties", {}))


def write_config(workdir: Path, index: int, accounts: dict[str, str], rng: random.Random,
                 url: str, options: Options) -> Path:  # fmt: skip
    """``runner-<index>.yaml``: ``accounts`` (name -> accountid); about a third hang."""
    top, per_account = schema_fields()
    top_extra = account_extra = ""
    if "tick_timeout" in per_account:
        account_extra = f"  tick_timeout: {options.tick_timeout}\n"
    if "watchdog_timeout" in top:
        tick_s = int(options.tick_timeout.rstrip("s"))
        top_extra = f"watchdog_timeout: {tick_s + 31}s\n"
    lines = []
    for name, accountid in accounts.items():
        hanging = rng.random() < 1 / 3
        strategy = "chaos_strategy:Hanging" if hanging else "chaos_strategy:Flip"
        lines.append(
            f"  - {{name: {name}, accountid: '{accountid}', strategy: '{strategy}', "
            f"instrument: {rng.choice(INSTRUMENTS)}, "
            f"params: {{hang_probability: {options.hang_probability}}}}}"
        )
    path = workdir / f"runner-{index}.yaml"
    path.write_text(
        CONFIG.format(url=url, state_dir=workdir / f"state-{index}", api_key=API_KEY,
                      stop_timeout=options.stop_timeout, top_extra=top_extra,
                      account_extra=account_extra, accounts="\n".join(lines)),
        encoding="utf-8",
    )  # fmt: skip
    return path


# --- one supervisor, from start to judged stop -----------------------------------------------


class Run:
    """One ``multirun start``: started, shaken, stopped at an aimed moment, judged."""

    def __init__(self, index: int, workdir: Path, sim: SimServer, options: Options) -> None:
        self.index = index
        self.rng = random.Random(options.seed * 1_000_003 + index)
        self.options = options
        self.sim = sim
        self.mark = f"{os.getpid()}-{options.seed}-{index}"
        count = self.rng.randint(1, max(1, options.accounts))
        self.accounts = {f"c{index}a{k}": f"CHAOS-{index}-{k}" for k in range(count)}
        self.config = write_config(workdir, index, self.accounts, self.rng, sim.base_url, options)
        self.state_dir = workdir / f"state-{index}"
        self.out = workdir / f"out-{index}.log"
        self.chaos: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    # reading the supervisor's and workers' files
    def supervisor(self) -> dict[str, Any]:
        return _json(self.state_dir / "supervisor.json")

    def account(self, name: str) -> dict[str, Any]:
        return dict(self.supervisor().get("accounts", {}).get(name) or {})

    def worker_status(self, name: str) -> dict[str, Any]:
        return _json(self.state_dir / name / "status.json")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Poll ``predicate`` until truthy, the supervisor exits, or ``timeout``; its value."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        return None

    def pause(self, seconds: float) -> None:
        """Let the run go on for ``seconds`` (the chaos's timing, not a synchronisation)."""
        deadline = time.monotonic() + seconds
        while self.alive() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CHAOS_MARK": self.mark}
        with self.out.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from multirun.cli.app import main; main()",
                 "start", str(self.config)],
                stdout=sink, stderr=subprocess.STDOUT, cwd=self.config.parent, env=env,
                start_new_session=True,
            )  # fmt: skip

    def ticking(self) -> list[str]:
        """Accounts whose current worker has scheduled a tick."""
        names = []
        for name in self.accounts:
            pid = self.account(name).get("pid")
            status = self.worker_status(name)
            if pid and status.get("pid") == pid and status.get("next_tick_utc"):
                names.append(name)
        return names

    def holding(self) -> bool:
        """Whether some account's worker says it holds an open trade."""
        return any(self.worker_status(n).get("open_trades") for n in self.accounts)

    def worker_pid(self, name: str) -> int | None:
        pid = self.account(name).get("pid")
        return pid if isinstance(pid, int) else None

    def signal_worker(self, name: str, signum: signal.Signals) -> int | None:
        pid = self.worker_pid(name)
        if pid is not None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return None
            self.chaos.append(f"{signum.name.removeprefix('SIG')}:{name}")
        return pid

    def shake(self) -> None:
        """Before the aimed stop: maybe SIGKILL one worker, maybe SIGSTOP (and SIGCONT) one."""
        names = list(self.accounts)
        if self.rng.random() < 0.3:
            self.signal_worker(self.rng.choice(names), signal.SIGKILL)
            self.pause(self.rng.uniform(0.0, 2.5))
        if self.rng.random() < 0.3:
            name = self.rng.choice(names)
            if self.signal_worker(name, signal.SIGSTOP) is not None:
                self.pause(self.rng.uniform(0.2, 2.0))
                if self.rng.random() < 0.5:
                    self.signal_worker(name, signal.SIGCONT)

    def aim(self, kind: str) -> str:
        """Wait for the moment ``kind`` names; returns what was actually hit."""
        name = self.rng.choice(list(self.accounts))
        if kind in ("backoff", "reconcile"):
            old = self.signal_worker(name, signal.SIGKILL)
            if old is None:
                return "anytime"
            if kind == "backoff":
                hit = self.wait_for(lambda: self.account(name).get("state") == "BACKOFF", 3.0)
                self.pause(self.rng.uniform(0.0, 0.5))
                return kind if hit else "anytime"
            restarted = self.wait_for(lambda: self.worker_pid(name) not in (None, old), 10.0)
            self.pause(self.rng.uniform(0.0, 0.4))
            return kind if restarted else "anytime"
        if kind == "mid-tick":
            due = self.worker_status(name).get("next_tick_utc")
            if due:
                target = datetime.fromisoformat(str(due).replace("Z", "+00:00")).timestamp()
                self.pause(max(0.0, target - time.time()) + self.rng.uniform(0.0, 1.0))
                return kind
            return "anytime"
        self.pause(self.rng.uniform(0.0, 1.0))
        return "anytime"

    def execute(self) -> StopResult:
        options = self.options
        self.start()
        self.wait_for(self.ticking, 20.0)
        self.wait_for(self.holding, 5.0)  # so that most stops have a trade to close
        self.pause(self.rng.uniform(*options.run_s))
        self.shake()
        kind = self.aim(self.rng.choice(options.kinds))
        signum = self.rng.choice((signal.SIGTERM, signal.SIGINT))
        assert self.proc is not None
        states = sorted(
            {str(a.get("state")) for a in self.supervisor().get("accounts", {}).values()}
        )
        began = time.monotonic()
        note = ""
        if self.proc.poll() is not None:
            note = f"supervisor exited before the stop ({self.proc.returncode})"
        else:
            os.kill(self.proc.pid, signum)
        bound = 2 * options.stop_timeout + 30
        try:
            exit_code = str(self.proc.wait(timeout=bound))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            exit_code = "hung"
            note = f"still running {bound:g} s after the stop"
        seconds = time.monotonic() - began
        left = orphans(self.mark)
        result = StopResult(
            index=self.index, kind=kind, signal=signum.name, accounts=len(self.accounts),
            exit=exit_code, seconds=seconds, chaos=list(self.chaos), states=states,
            orphans=left, note=note,
        )  # fmt: skip
        output = self.out.read_text(errors="replace")
        journals = {n: self.state_dir / n / "journal.sqlite" for n in self.accounts}
        return judge(result, self.sim.ledger(), self.accounts, output, journals)

    def cleanup(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        orphans(self.mark, grace_s=0.0)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- the lanes ----------------------------------------------------------------------------


def run_chaos(options: Options) -> tuple[Tally, float, dict[str, Any]]:
    """Run ``options.stops`` stops over ``options.parallel`` lanes; the tally, wall time, stats."""
    tally = Tally()
    lock = threading.Lock()
    counter = iter(range(options.stops))
    stopping = threading.Event()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = options.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "chaos_strategy.py").write_text(STRATEGY, encoding="utf-8")
        faults = FaultSettings().updated(dict(fault_settings(options.fault_rate, options.hold_ms)))
        began = time.monotonic()
        with SimServer(SimConfig(seed=options.seed, faults=faults)) as sim:

            def lane() -> None:
                while not stopping.is_set():
                    with lock:
                        index = next(counter, None)
                    if index is None:
                        return
                    run = Run(index, workdir, sim, options)
                    try:
                        result = run.execute()
                    finally:
                        run.cleanup()
                    with lock:
                        tally.add(result)
                        if options.echo is not None:
                            options.echo(result.line())

            threads = [threading.Thread(target=lane, name=f"lane-{n}", daemon=True)
                       for n in range(max(1, options.parallel))]  # fmt: skip
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.5)
            except KeyboardInterrupt:
                stopping.set()
                for thread in threads:
                    thread.join()
                raise
            stats = sim.stats()
        wall = time.monotonic() - began
    return tally, wall, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stops", type=int, default=200)
    parser.add_argument("--accounts", type=int, default=3, help="most accounts per supervisor")
    parser.add_argument("--parallel", type=int, default=12, help="supervisors at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.4)
    parser.add_argument("--hold-ms", type=float, default=12_000.0)
    parser.add_argument("--stop-timeout", type=float, default=15.0)
    parser.add_argument("--kinds", default=",".join(KINDS), help="stop moments to aim at")
    parser.add_argument("--workdir", type=Path, help="keep configs, outputs and state here")
    parser.add_argument("--quiet", action="store_true", help="no line per stop")
    args = parser.parse_args(argv)
    # Children inherit an ignored SIGINT (a bench started in the background): undo that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    options = Options(
        stops=args.stops, accounts=args.accounts, parallel=args.parallel, seed=args.seed,
        fault_rate=args.fault_rate, hold_ms=args.hold_ms, stop_timeout=args.stop_timeout,
        kinds=kinds, workdir=args.workdir, echo=None if args.quiet else print,
    )  # fmt: skip
    tally, wall, stats = run_chaos(options)
    faulted = sum(stats["faults_injected"].values())
    requests = max(1, sum(n for e, n in stats["requests"].items() if not e.startswith("sim/")))
    header = (
        f"chaos: {options.stops} stops, {options.parallel} at once, 1-{options.accounts} "
        f"accounts each, seed {options.seed}\n"
        f"requests:              {requests}, faulted {faulted} ({faulted / requests:.0%}): "
        f"{dict(stats['faults_injected'])}"
    )
    print(tally.report(wall, header))
    print("OK" if tally.ok else "FAILED")
    return 0 if tally.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
