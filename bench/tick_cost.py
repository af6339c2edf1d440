"""CPU per tick: the real Worker's tick next to the seed script's round, in one run.

    python bench/tick_cost.py [--ticks 60] [--rounds 3] [--profile noop|trading] [--json]

Starts the simulator in a child process (so its CPU is not ours), then in this process,
alternating in rounds so machine noise hits every row alike:

- **multirun no-op**: a :class:`multirun.account.worker.Worker` (real client, journal, status
  file and heartbeat) whose strategy holds nothing: what a tick costs when no order is
  due (sync with the server, the strategy, the status file, the journal);
- **multirun trading**: the same Worker running the built-in ``random`` strategy (as
  ``bench/scale.py`` does): close what it holds, then open BUY or SELL (2 draws in 3)
  and confirm both through the server's listings, everything journaled;
- **seed trading**: the ``requests`` calls of the seed script's round in
  ``bench/scale.py`` (``query_order`` and ``close_order`` of the last trade, then
  ``open_order`` on the same draws), module-level ``requests.get``/``post``, then its
  fill awaited (polled in ``/opened_trades``), as a deployed seed finds it filled a
  minute later (back to back it used to close trades not yet filled);
- **..., spaced**: the trading rows again, ``--spaced`` seconds between ticks (what a
  deployed account does; back-to-back ticks keep caches and the CPU warm).

CPU is this process's user+system time (``time.process_time``: every thread, e.g. the
request deadline watchdog) per tick. Prints the median over rounds of each and the
ratios multirun/seed. ``--profile`` prints a cProfile of one kind of tick instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multirun import strategies  # noqa: E402
from multirun.account.alarm import Heartbeat  # noqa: E402
from multirun.account.journal.store import Journal  # noqa: E402
from multirun.account.process import build_worker  # noqa: E402
from multirun.account.ticker import StopFlag, Tick  # noqa: E402
from multirun.api.client import AlgogeneClient  # noqa: E402
from multirun.config.specs import AccountSpec, Guardrails, RunnerSpec, freeze  # noqa: E402
from multirun.core.redact import Secret  # noqa: E402
from multirun.core.statedir import StateDir  # noqa: E402
from multirun.strategies.context import StrategyContext  # noqa: E402

SIM = (
    "import sys\n"
    "from multirun.sim import SimConfig, SimServer\n"
    "with SimServer(SimConfig(fill_delay_ms=20)) as sim:\n"
    "    print(sim.base_url, flush=True)\n"
    "    sys.stdin.read()\n"
)
CHOICES = ("BUY", "SELL", "")  # the seed's draws
FILL_S = 0.02  # the simulator's fill delay: the seed waits that long, then polls


@contextmanager
def simulator() -> Iterator[str]:
    """The simulator in a child process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SIM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def hold(ctx: StrategyContext) -> object:
    return None  # no signal: nothing to do


class Account:
    """One real Worker on its own simulator account, ticked by hand."""

    def __init__(self, url: str, state_dir: Path, name: str, on_tick: Callable[..., object]):
        spec = AccountSpec(
            name=name, user=f"user-{name}", api_key=Secret(f"key-{name}-0123456789"),
            accountid=f"ACC-{name}", runmode="livetest", strategy="random",
            instrument="BTCUSD", volume=1.0, interval_s=5, params=freeze({"seed": 1}),
            guardrails=Guardrails(max_orders_per_hour=1_000_000),  # as bench/scale.py
        )  # fmt: skip
        runner = RunnerSpec(
            path=state_dir / "runner.yaml", server=url, state_dir=state_dir, accounts=(spec,)
        )
        account = StateDir(state_dir).account(name)
        self.journal = Journal.for_account(account, spec.order_ref_prefix)
        beat = Heartbeat(account.heartbeat)
        self.client = AlgogeneClient(
            url, spec.user, spec.api_key, spec.runmode, spec.accountid, heartbeat=beat
        )
        self.worker = build_worker(
            runner, spec, self.client, self.journal, on_tick, stop=StopFlag(), heartbeat=beat
        )
        self.worker.reconcile()

    def tick(self) -> None:
        now = time.time()
        self.worker.tick(Tick(now, now, self.worker.ticks + 1))
        if self.worker.last_error:
            raise SystemExit(f"tick_cost: tick failed: {self.worker.last_error}")

    def close(self) -> None:
        self.journal.close()
        self.client.close()
        self.worker.stop.close()


class Seed:
    """The seed script's round (bench/scale.py's SEED), its requests calls verbatim."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.user, self.key, self.accountid = url, name, f"key-{name}", f"SEED-{name}"
        reply = requests.get(url + "/session", params={"api_key": self.key, "user": self.user},
                             timeout=10).json()  # fmt: skip
        self.token = reply["res"]["token"]
        self.trade_id = ""
        self.rng = random.Random(1)

    def _data(self, **extra: str | int) -> dict[str, str | int]:
        return {"api_key": self.key, "user": self.user, "runmode": "livetest",
                "accountid": self.accountid, "token": self.token, **extra}  # fmt: skip

    def tick(self) -> None:
        if self.trade_id != "":
            requests.get(self.url + "/opened_trades", params=self._data(tradeID=self.trade_id),
                         timeout=10).json()  # fmt: skip
            requests.post(self.url + "/close_orders", data=json.dumps(
                self._data(tradeIDs=self.trade_id)), timeout=10).json()  # fmt: skip
            self.trade_id = ""
        buysell = self.rng.choice(CHOICES)
        if buysell != "":
            body = self._data(instrument="BTCUSD", buysell=buysell, volume=1, orderRef="",
                              ordertype="MKT")  # fmt: skip
            reply = requests.post(self.url + "/open_order", data=json.dumps(body),
                                  timeout=10).json()  # fmt: skip
            self.trade_id = str(reply.get("tradeID", ""))
            self._await_fill()

    def _await_fill(self) -> None:
        """Wait until the trade is listed (filled), as a deployed seed, a minute between
        rounds, always finds it: ticked back to back, the next round's close would come
        before the 20 ms fill ("trade is not open yet"), trades would pile up and every
        open fail with "insufficient margin" after ~115 ticks, so the rounds decayed to
        nothing (2.38 / 1.73 / 0.68 ms) and the ratio against them meant nothing."""
        time.sleep(FILL_S)
        for _ in range(200):
            listed = requests.get(
                self.url + "/opened_trades", params=self._data(tradeID=self.trade_id), timeout=10
            ).json()
            if listed.get("count", 0):
                return
            time.sleep(0.005)
        raise SystemExit(f"tick_cost: seed trade {self.trade_id} never listed")  # fmt: skip


def cpu_per_tick(tick: Callable[[], None], ticks: int, spacing_s: float = 0.0) -> float:
    """CPU seconds of this process per call of ``tick``, ``spacing_s`` apart (0: back
    to back; the pauses cost CPU only for what wakes meanwhile, as between real ticks)."""
    before = time.process_time()
    for _ in range(ticks):
        tick()
        if spacing_s:
            time.sleep(spacing_s)
    return (time.process_time() - before) / ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spaced", type=float, default=1.0,
                        help="seconds between the spaced rounds' ticks (0: none)")  # fmt: skip
    parser.add_argument("--spaced-ticks", type=int, default=8)
    parser.add_argument("--profile", choices=("noop", "trading"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    random_on_tick = strategies.build(strategies.resolve("random", ROOT), {"seed": 1})
    with simulator() as url, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        noop = Account(url, state, "noop", hold)
        trading = Account(url, state, "trading", random_on_tick)
        seed = Seed(url, "seed")
        rows: dict[str, Callable[[], None]] = {
            "multirun no-op": noop.tick, "multirun trading": trading.tick, "seed trading": seed.tick
        }  # fmt: skip
        for tick in rows.values():  # warm up: connections, tokens, caches
            tick()
        if args.profile:
            profile = cProfile.Profile(time.process_time)  # CPU, not wall time
            target = rows["multirun no-op" if args.profile == "noop" else "multirun trading"]
            profile.runcall(cpu_per_tick, target, args.ticks)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
            return 0
        spaced = {"multirun trading": trading.tick, "seed trading": seed.tick}
        if not args.spaced:
            spaced = {}
        figures: dict[str, list[float]] = {label: [] for label in rows}
        figures.update({f"{label}, spaced": [] for label in spaced})
        for _ in range(args.rounds):
            for label, tick in rows.items():
                figures[label].append(cpu_per_tick(tick, args.ticks))
            for label, tick in spaced.items():
                figures[f"{label}, spaced"].append(
                    cpu_per_tick(tick, args.spaced_ticks, args.spaced)
                )
        noop.close()
        trading.close()
    med = {label: statistics.median(values) * 1000 for label, values in figures.items()}
    lines = [f"CPU per tick (ms, median of {args.rounds} rounds of {args.ticks} ticks)"]
    for label, value in med.items():
        spread = ", ".join(f"{v * 1000:.2f}" for v in figures[label])
        lines.append(f"  {label:26}{value:8.2f}   ({spread})")
    baseline = med["seed trading"]
    lines.append(f"ratio multirun trading / seed trading: {med['multirun trading'] / baseline:.2f}")
    if "seed trading, spaced" in med:
        ours = med["multirun trading, spaced"]
        lines.append(
            f"ratio spaced ({args.spaced:g} s apart): {ours / med['seed trading, spaced']:.2f}; "
            f"multirun spaced / back to back: {ours / med['multirun trading']:.2f}"
        )
    lines.append(f"ratio multirun no-op / seed trading:   {med['multirun no-op'] / baseline:.2f}")
    if args.json:
        print(json.dumps({"cpu_ms": med, "table": "\n".join(lines)}, indent=2))
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
