"""Open + query + close round trips per second: our client against seed-style calls.

    python bench/client_throughput.py [--cycles 300] [--seed 1]

Starts the simulator in-process (no faults, no fill delay), then runs the same
number of cycles two ways, alternating in blocks so drift affects both equally:

- **client**: one :class:`multirun.api.client.AlgogeneClient` (one HTTP session,
  explicit timeouts, typed replies): ``open_order`` + ``opened_trades(trade_id)`` +
  ``close_trades`` (which also confirms the close through ``opened_trades``);
- **seed**: the calls of ALGOGENE's example script (``../shared/seeds``): module
  level ``requests.get``/``requests.post`` (a new connection per request), POST
  bodies as ``data=json.dumps(...)``, no timeouts, no checks.

Prints cycles per second for both, their ratio, p50/p99 latency per cycle, and
requests per cycle (the client's close is confirmed by one more opened_trades read,
so it makes four requests where the seed makes three).

The simulator speaks HTTP/1.1 with keep-alive, as a real API server does, so the
client's connection reuse counts. Over loopback HTTP a new connection costs little;
over TLS to a remote server it costs a handshake of several round trips, so these
ratios understate what reuse saves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multirun.api.client import AlgogeneClient
from multirun.core.redact import Secret
from multirun.sim import SimConfig, SimServer

USER, API_KEY, RUNMODE = "bench", "bench-api-key-0123456789", "livetest"
BLOCK = 25  # cycles per block; blocks alternate between the two ways


class SeedStyle:
    """ALGOGENE's example script, as functions over one simulator."""

    def __init__(self, base_url: str, accountid: str) -> None:
        self.base_url = base_url
        self.accountid = accountid
        url = base_url + "/session"
        self.token = requests.get(url, params={"api_key": API_KEY, "user": USER}).json()["res"][
            "token"
        ]

    def _data(self, **extra: str | float) -> dict[str, str | float]:
        return {"api_key": API_KEY, "user": USER, "runmode": RUNMODE,
                "accountid": self.accountid, "token": self.token, **extra}  # fmt: skip

    def cycle(self, n: int) -> None:
        data = self._data(instrument="EURUSD", buysell="BUY", volume=0.01,
                          orderRef=f"seed-{n}", ordertype="MKT")  # fmt: skip
        res = requests.post(self.base_url + "/open_order", data=json.dumps(data)).json()
        trade_id = res["tradeID"]
        requests.get(self.base_url + "/opened_trades", params=self._data(tradeID=trade_id)).json()
        data = self._data(tradeIDs=trade_id)
        requests.post(self.base_url + "/close_orders", data=json.dumps(data)).json()


class OurClient:
    def __init__(self, base_url: str, accountid: str) -> None:
        self.client = AlgogeneClient(base_url, USER, Secret(API_KEY), RUNMODE, accountid)

    def cycle(self, n: int) -> None:
        ack = self.client.open_order("EURUSD", "BUY", 0.01, f"mr-bench-{n}")
        self.client.opened_trades(ack.trade_id)
        self.client.close_trades([ack.trade_id])


def timed(cycle: Callable[[int], None], start: int, count: int) -> list[float]:
    out = []
    for n in range(start, start + count):
        began = time.perf_counter()
        cycle(n)
        out.append(time.perf_counter() - began)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_pass(sim: SimServer, cycles: int, label: str) -> tuple[float, float]:
    ours = OurClient(sim.base_url, f"ACC-C-{label}")
    seed = SeedStyle(sim.base_url, f"ACC-S-{label}")
    timed(ours.cycle, 10_000_000, 5)  # warm-up: token, connection, code paths
    timed(seed.cycle, 10_000_000, 5)
    results: dict[str, list[float]] = {"client": [], "seed": []}
    requests_made = {"client": 0, "seed": 0}
    done = 0
    while done < cycles:
        block = min(BLOCK, cycles - done)
        for name, way in (("client", ours), ("seed", seed)):
            before = total_requests(sim)
            results[name] += timed(way.cycle, done, block)
            requests_made[name] += total_requests(sim) - before
        done += block
    ours.client.close()
    rates = {}
    print(f"\n{label}: {cycles} cycles each (open_order + opened_trades + close_orders)")
    print(f"  {'':8} {'cycles/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'requests/cycle':>15}"
          f" {'requests/s':>11}")  # fmt: skip
    per_request = {}
    for name, latencies in results.items():
        rates[name] = len(latencies) / sum(latencies)
        p50, p99 = percentile(latencies, 0.50) * 1e3, percentile(latencies, 0.99) * 1e3
        per_cycle = requests_made[name] / len(latencies)
        per_request[name] = requests_made[name] / sum(latencies)
        print(f"  {name:8} {rates[name]:10.1f} {p50:9.2f} {p99:9.2f} {per_cycle:15.2f}"
              f" {per_request[name]:11.1f}")  # fmt: skip
    ratio = rates["client"] / rates["seed"]
    request_ratio = per_request["client"] / per_request["seed"]
    print(f"  ratio client/seed: {ratio:.2f}x cycles/s ({request_ratio:.2f}x requests/s)")
    return rates["client"], rates["seed"]


def total_requests(sim: SimServer) -> int:
    return sum(sim.stats()["requests"].values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = SimConfig(seed=args.seed, fill_delay_ms=0.0)
    with SimServer(config) as sim:
        print(f"simulator at {sim.base_url}")
        run_pass(sim, args.cycles, "simulator")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
