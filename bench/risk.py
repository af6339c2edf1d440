"""Money limits on the simulator: how far past its limit a losing account (or the fleet)
ends, and how soon the limit acts.

    python bench/risk.py [--interval 1] [--fall 20] [--limit 200] [--only NAME ...] [--json]

Each scenario runs the real supervisor (``multirun start``: one worker process per
account) against a simulator in this process (127.0.0.1, port 0) whose BTCUSD mid a
thread moves down ``--fall`` USD a second, every 0.1 s, so the accounts (volume 1,
``interval`` seconds) lose money at a known pace. The strategies, from a module written
beside the config: ``churn`` (long, closed and opened again every tick: it also loses
the spread, 36 USD, each tick) and ``hold`` (long and staying long).

- ``daily-pause``: one account, ``risk: {max_daily_loss: L, on_breach: pause}``, churn
  (after the pause its own next tick closes, and nothing opens again);
- ``daily-flatten``: one account, ``max_daily_loss: L, on_breach: flatten``, hold;
- ``drawdown-flatten``: one account, ``max_drawdown: L, on_breach: flatten``, hold;
- ``fleet-flatten``: two accounts, churn, no limit of their own, the file's
  ``risk: {max_daily_loss: L, on_breach: flatten}`` (the supervisor sums their pipes).

This process reads each account's ``/balance`` NAV from the simulator every 50 ms: the
**crossing** is the first read where the loss (initial NAV minus NAV, summed for the
fleet; for ``drawdown-flatten`` the fall from the highest NAV read) exceeds L; the
**reaction** is from the read before it (the last one within the limit: an upper bound)
to the moment the last account was paused (``status.json``'s ``paused_since_utc``), in
seconds, and in ticks (how many of the account's ticks, on its grid and wake-up offset,
started in between: 1 is "at the next tick"). Once every account is flat (or 5 ticks
later), the supervisor is stopped (SIGTERM) and the **loss at rest** is the ledger's
realized P&L of every trade, all closed; the **overshoot** is loss at rest / L. The
bound (issue 24): the loss at rest exceeds L by at most what was held at the crossing
plus one tick's price move (and, for churn, the spread of the tick that crosses). Exit
status 1 when a scenario did not breach, left a trade open or ended past that bound.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multirun.api.client import AlgogeneClient  # noqa: E402
from multirun.core.clock import parse_iso  # noqa: E402
from multirun.core.redact import Secret  # noqa: E402
from multirun.sim import SimConfig, SimServer  # noqa: E402

MID = 30000.0  # BTCUSD's mid when a scenario starts
SPREAD = 36.0  # the simulator's BTCUSD spread
POLL_S = 0.05
STRATEGIES = """\
from multirun.strategies import Signal
from multirun.strategies.context import Decision


def churn(ctx):
    return Decision(Signal.BUY, fresh=True)


def hold(ctx):
    return "BUY"
"""
CONFIG = """\
server: {url}
state_dir: {state_dir}
stop_timeout: 30
{risk}defaults:
  user: bench
  api_key: bench-key
  runmode: livetest
  instrument: BTCUSD
  volume: 1
  interval: {interval}s
  on_stop: close
  max_orders_per_hour: 100000
accounts:
{accounts}"""


@dataclass(frozen=True)
class Scenario:
    name: str
    strategy: str
    accounts: int
    account_risk: str | None  # the accounts' own ``risk:`` (flow mapping), or None
    file_risk: str | None  # the file's ``risk:`` block, or None
    drawdown: bool = False  # the limit is on the fall from the peak, not from the start

    def config(self, url: str, state_dir: Path, interval: int, limit: float) -> str:
        amount = f": {limit:g}"
        own = "" if self.account_risk is None else f", risk: {self.account_risk}"
        accounts = "".join(
            f"  - {{name: r{n}, accountid: 'R-{n}', strategy: 'losers:{self.strategy}'"
            f"{own.replace(': L', amount)}}}\n"
            for n in range(self.accounts)
        )
        risk = "" if self.file_risk is None else self.file_risk.replace(": L", amount)
        return CONFIG.format(url=url, state_dir=state_dir, interval=interval, risk=risk,
                             accounts=accounts)  # fmt: skip


SCENARIOS = (
    Scenario("daily-pause", "churn", 1, "{max_daily_loss: L, on_breach: pause}", None),
    Scenario("daily-flatten", "hold", 1, "{max_daily_loss: L, on_breach: flatten}", None),
    Scenario(
        "drawdown-flatten", "hold", 1, "{max_drawdown: L, on_breach: flatten}", None, True
    ),
    Scenario(
        "fleet-flatten", "churn", 2, None,
        "risk:\n  max_daily_loss: L\n  on_breach: flatten\n",
    ),
)  # fmt: skip


@dataclass
class Outcome:
    scenario: str
    limit: float
    crossed: bool = False
    paused: bool = False
    reaction_s: float | None = None
    reaction_ticks: int | None = None
    loss_at_crossing: float | None = None
    each_at_crossing: list[float] = field(default_factory=list)
    held_loss_at_crossing: float | None = None
    loss_at_rest: float | None = None
    left_open: int = 0
    reasons: list[str] = field(default_factory=list)

    bound: float | None = None  # what the loss at rest may be at most (issue 24)

    @property
    def overshoot(self) -> float | None:
        return None if self.loss_at_rest is None else self.loss_at_rest / self.limit

    @property
    def within(self) -> bool:
        return None not in (self.loss_at_rest, self.bound) and (
            self.loss_at_rest or 0.0) <= (self.bound or 0.0)  # fmt: skip


class Falling:
    """Moves BTCUSD's mid down ``fall`` USD a second, every 0.1 s, until stopped."""

    def __init__(self, sim: SimServer, fall: float) -> None:
        self.sim, self.fall = sim, fall
        self.stop = threading.Event()
        self.began = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.sim.set_price("BTCUSD", MID - self.fall * (time.monotonic() - self.began))


def clients(sim: SimServer, accounts: int) -> list[AlgogeneClient]:
    return [
        AlgogeneClient(sim.base_url, "bench", Secret("bench-key"), "livetest", f"R-{n}")
        for n in range(accounts)
    ]


def statuses(state_dir: Path, accounts: int) -> list[dict[str, Any]]:
    out = []
    for n in range(accounts):
        try:
            out.append(json.loads((state_dir / f"r{n}" / "status.json").read_text()))
        except (OSError, ValueError):
            out.append({})
    return out


@contextlib.contextmanager
def supervisor(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "multirun", "start", str(config)],
            stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_scenario(scenario: Scenario, interval: int, fall: float, limit: float) -> Outcome:
    outcome = Outcome(scenario.name, limit)
    with (
        tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp,
        SimServer(SimConfig(host="127.0.0.1", port=0)) as sim,
    ):
        work = Path(tmp)
        (work / "losers.py").write_text(STRATEGIES)
        config = work / "runner.yaml"
        state_dir = work / "state"
        config.write_text(scenario.config(sim.base_url, state_dir, interval, limit))
        sim.set_price("BTCUSD", MID)  # the first trades open near it, not at the walk's
        readers = clients(sim, scenario.accounts)
        initial = [c.balance().nav for c in readers]
        with supervisor(config, work / "supervisor.log"):
            watch(outcome, scenario, sim, readers, initial, state_dir, interval, fall)
        for reader in readers:
            reader.close()
        ledger = [o for o in sim.ledger() if str(o["orderRef"]).startswith("mr-r")]
        outcome.left_open = sum(o["status"] != "CLOSED" for o in ledger)
        if outcome.left_open == 0 and ledger:
            outcome.loss_at_rest = round(-sum(float(o["realized_pl"]) for o in ledger), 2)
        if outcome.held_loss_at_crossing is not None:
            # the limit, what was held at the crossing, one tick's move of each account's
            # trade, and the spread of a trade a churning account opens in the crossing tick
            spread = SPREAD if scenario.strategy == "churn" else 0.0
            step = (fall * interval + spread) * scenario.accounts
            outcome.bound = round(limit + outcome.held_loss_at_crossing + step, 2)
    return outcome


def watch(
    outcome: Outcome,
    scenario: Scenario,
    sim: SimServer,
    readers: list[AlgogeneClient],
    initial: list[float],
    state_dir: Path,
    interval: int,
    fall: float,
) -> None:
    """Wait for every account to tick, let the price fall, time the crossing and the pause,
    then wait until flat (at most 5 ticks) for the supervisor's stop."""
    up = time.monotonic() + 60
    while not all(s.get("ticks", 0) >= 1 for s in statuses(state_dir, scenario.accounts)):
        if time.monotonic() > up:
            raise SystemExit(f"risk: {scenario.name}: the accounts never ticked")
        time.sleep(POLL_S)
    falling = Falling(sim, fall)
    falling.thread.start()
    crossed_at = paused_at = None
    below_at = time.time()  # the last read still within the limit (wall time)
    peak = sum(initial)
    give_up = time.monotonic() + 60 + 4 * outcome.limit / fall
    try:
        while time.monotonic() < give_up:
            now = time.monotonic()
            read_at = time.time()
            navs = [r.balance().nav for r in readers]
            losses = [a - b for a, b in zip(initial, navs, strict=True)]
            peak = max(peak, sum(navs))
            fall = peak - sum(navs) if scenario.drawdown else sum(losses)
            seen = statuses(state_dir, scenario.accounts)
            if crossed_at is None and fall <= outcome.limit:
                below_at = read_at
            if crossed_at is None and fall > outcome.limit:
                crossed_at = below_at
                outcome.crossed = True
                outcome.loss_at_crossing = round(fall, 2)
                outcome.each_at_crossing = [round(x, 2) for x in losses]
                outcome.held_loss_at_crossing = round(held_loss(readers), 2)
            if paused_at is None and all(s.get("state") == "PAUSED" for s in seen):
                paused_at = now
                outcome.paused = True
                outcome.reasons = sorted({str(s.get("paused_reason")) for s in seen})
                if crossed_at is not None:
                    since = max(parse_iso(s.get("paused_since_utc")) or read_at for s in seen)
                    outcome.reaction_s = round(since - crossed_at, 3)
                    offset = (seen[0].get("tick_offset_ms") or 0) / 1000
                    outcome.reaction_ticks = ticks_between(crossed_at, since, interval, offset)
            if paused_at is not None:
                flat = all(not s.get("open_trades") for s in seen)
                if flat or now - paused_at > 5 * interval:
                    return
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
    finally:
        falling.stop.set()


def ticks_between(start: float, end: float, interval: int, offset: float) -> int:
    """How many ticks (grid points plus the account's wake-up offset) start in (start, end]."""
    return int((end - offset) // interval - (start - offset) // interval)


def held_loss(readers: list[AlgogeneClient]) -> float:
    """What the accounts' open trades lose now (their listings' unrealized P&L)."""
    return -sum(t.unrealized_pl for r in readers for t in r.opened_trades())


def print_table(outcomes: list[Outcome], interval: int, fall: float) -> None:
    print(f"risk: interval {interval} s, BTCUSD falling {fall:g} USD/s, volume 1; "
          f"pid {os.getpid()}")  # fmt: skip
    header = ("scenario", "limit", "loss@cross", "held@cross", "loss at rest", "bound",
              "overshoot", "reaction s", "ticks", "reason")  # fmt: skip
    print(" | ".join(header))
    for o in outcomes:
        cells = [
            o.scenario, f"{o.limit:g}", _num(o.loss_at_crossing), _num(o.held_loss_at_crossing),
            _num(o.loss_at_rest), _num(o.bound) + ("" if o.within else " EXCEEDED"),
            "-" if o.overshoot is None else f"{o.overshoot:.3f}",
            _num(o.reaction_s, 3), "-" if o.reaction_ticks is None else str(o.reaction_ticks),
            "; ".join(o.reasons) or "-",
        ]  # fmt: skip
        print(" | ".join(cells))
    fleet = [o for o in outcomes if o.scenario.startswith("fleet")]
    for o in fleet:
        print(f"{o.scenario}: each account's loss at the crossing: {o.each_at_crossing} "
              f"(neither alone over {o.limit:g})")  # fmt: skip


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=int, default=1, help="the accounts' tick (s)")
    parser.add_argument("--fall", type=float, default=20.0, help="BTCUSD's fall (USD/s)")
    parser.add_argument("--limit", type=float, default=200.0, help="every limit (USD)")
    parser.add_argument("--only", nargs="*", help="these scenarios only (by name)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    outcomes = [run_scenario(s, args.interval, args.fall, args.limit) for s in chosen]
    table = io.StringIO()
    with contextlib.redirect_stdout(table if args.json else sys.stdout):
        print_table(outcomes, args.interval, args.fall)
    if args.json:
        figures = {
            o.scenario: {**asdict(o), "overshoot": o.overshoot, "within": o.within}
            for o in outcomes
        }
        print(json.dumps({**figures, "table": table.getvalue().strip()}, indent=2))
    ok = all(o.crossed and o.paused and o.left_open == 0 and o.within for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
