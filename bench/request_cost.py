"""CPU of one request: multirun's transport beside the libraries beneath it, in one run.

    python bench/request_cost.py [--requests 400] [--rounds 5] [--json]

Starts the simulator in a child process (its CPU is not ours), fetches a session token,
then sends ``GET /opened_trades`` (the request a tick makes most) through, in turn:

- **multirun**: :class:`multirun.api.transport.RequestSender` (the client's transport:
  total deadline watched, reply capped and decoded, errors mapped);
- **multirun, urllib3 pool**: the same sender with the wire path off, so it goes through
  the urllib3 pool of requests' adapter (the hot path before issue 27);
- **requests.Session**: ``session.get(url, params=...).json()``;
- **urllib3 pool**: ``pool.urlopen`` and ``json.loads``;
- **http.client**: one kept-alive ``HTTPConnection``, ``json.loads``.

CPU is this process's ``time.process_time`` (every thread) per request, the median over
rounds (alternating, so noise hits every row alike), in microseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tick_cost import simulator  # noqa: E402
from multirun.api.transport import HttpTransport, RequestSender  # noqa: E402
from multirun.core.clock import SYSTEM_CLOCK  # noqa: E402


def senders(url: str, params: dict[str, str]) -> dict[str, Callable[[], object]]:
    """One callable per row, each sending the request once."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode(params)
    target = f"{parts.path}/opened_trades?{query}"

    def sender(wire: bool) -> RequestSender:
        transport = HttpTransport(url)
        transport.http.wire = wire
        return RequestSender(
            url, connect_timeout=3.05, read_timeout=10.0, secrets=lambda: [],
            clock=SYSTEM_CLOCK, rng=random.Random(1), transport=transport,
        )  # fmt: skip

    ours, pooled = sender(True), sender(False)
    session = requests.Session()
    pool = urllib3.HTTPConnectionPool(parts.hostname or "", parts.port, maxsize=1)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)

    def stdlib() -> object:
        conn.request("GET", target, headers={"Accept-Encoding": "gzip, deflate"})
        return json.loads(conn.getresponse().read())

    return {
        "multirun": lambda: ours.send("GET", "opened_trades", params),
        "multirun, urllib3 pool": lambda: pooled.send("GET", "opened_trades", params),
        "requests.Session": lambda: session.get(f"{url}/opened_trades", params=params).json(),
        "urllib3 pool": lambda: json.loads(pool.urlopen("GET", target, retries=False).data),
        "http.client": stdlib,
    }


def cpu_us(send: Callable[[], object], count: int) -> float:
    before = time.process_time()
    for _ in range(count):
        send()
    return 1e6 * (time.process_time() - before) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with simulator() as url:
        reply = requests.get(f"{url}/session", params={"api_key": "k-0123456789", "user": "u"})
        params = {"api_key": "k-0123456789", "user": "u", "runmode": "livetest",
                  "accountid": "A", "token": reply.json()["res"]["token"]}  # fmt: skip
        rows = senders(url, params)
        for send in rows.values():
            send()  # warm: connections made, caches filled
        figures: dict[str, list[float]] = {label: [] for label in rows}
        for _ in range(args.rounds):
            for label, send in rows.items():
                figures[label].append(cpu_us(send, args.requests))
    med = {label: statistics.median(values) for label, values in figures.items()}
    lines = [f"CPU per GET /opened_trades (µs, median [min-max] of {args.rounds} rounds)"]
    for label, values in figures.items():
        lines.append(f"  {label:26}{med[label]:8.0f}   [{min(values):.0f}-{max(values):.0f}]")
    lines.append(f"ratio multirun / http.client: {med['multirun'] / med['http.client']:.2f}; "
                 f"multirun / its urllib3 path: "
                 f"{med['multirun'] / med['multirun, urllib3 pool']:.2f}")  # fmt: skip
    table = "\n".join(lines)
    print(json.dumps({"cpu_us": med, "table": table}, indent=2) if args.json else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
