"""An account worker's own metrics: plain counters and histograms, written to metrics.json.

The worker keeps them in-process (no ``prometheus_client`` here) and rewrites
``metrics.json`` atomically at most once per tick, best-effort: a failed write is
dropped and never stands in the way of an order. The supervisor's metrics child
(:mod:`multirun.services.metrics`) reads the file at each scrape. :class:`Telemetry`
is the worker's observer (:class:`multirun.account.observer.WorkerObserver`: its ticks,
its order sends) and its transport's ``on_request`` hook (each request's endpoint and
outcome), so the worker itself does not know about metrics.

Every label value is from a small fixed set declared here (:data:`LABEL_VALUES`: the
sides, the results, the endpoints the client calls, the outcome classes of
:func:`multirun.api.transport.request_outcome`), anything else counted as ``other``;
never a trade id, an orderRef, a URL or a secret. The metrics child shows every
combination of them at 0 before its first count (an alert on ``increase()`` sees the
first one).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from multirun.account.ticker import Tick
from multirun.core.errors import OrderRejected, OrderUncertain
from multirun.core.procutil import RewrittenJson
from multirun.core.statedir import AccountDir
from multirun.core.statefiles import CounterSample, WorkerMetrics, write_metrics

VERSION = 1
# Upper bounds, seconds (Prometheus adds +Inf).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A tick's lateness is a few ms: finer below 25 ms, with edges at 2 ms and 20 ms (issue
# 27's bounds for one account and for 200). histogram_quantile is linear within a bucket:
# with 10-25 ms as one, 200 accounts' p99 read 19.7-21.5 ms where the status files'
# 1 ms stamps of the same ticks gave 14.
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, *LATENCY_BUCKETS[3:])
BUCKETS = {
    "tick_lateness_seconds": LATENESS_BUCKETS,
    "tick_duration_seconds": LATENCY_BUCKETS,
    "order_roundtrip_seconds": LATENCY_BUCKETS,
}
SESSION_ENDPOINT = "session"
OTHER = "other"
SIDES = ("buy", "sell")
RESULTS = ("filled", "refused", "uncertain", "failed")  # see order_result
# The endpoints multirun.api.client calls; a new one is counted as `other` until added here.
ENDPOINTS = (
    "accounts",
    "balance",
    "positions",
    "opened_trades",
    "pending_trades",
    "query_order",
    "realtime_price",
    "history_price",
    "strategy_trade",
    SESSION_ENDPOINT,
    "open_order",
    "close_orders",
    "cancel_orders",
    OTHER,
)
# request_outcome's classes (3xx: a redirect not followed); anything else (1xx) is `other`.
OUTCOMES = (
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "auth_rejected",
    "refused",
    "protocol",
    "timeout",
    "dropped",
    OTHER,
)
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "side": SIDES,
    "result": RESULTS,
    "endpoint": ENDPOINTS,
    "outcome": OUTCOMES,
}
Labels = tuple[tuple[str, str], ...]


class Telemetry:
    """Counters and histograms of one account, and the file they are written to."""

    def __init__(self, account: AccountDir) -> None:
        self.account = account
        self.counters: dict[tuple[str, Labels], float] = {}
        self.histograms = {name: Histogram(bounds) for name, bounds in BUCKETS.items()}
        self.last_success: float | None = None  # wall time of the last tick that did not fail
        self._tick_began = 0.0  # monotonic
        self._file = RewrittenJson(account.metrics)  # no inode made and freed each tick

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + amount

    def observe(self, name: str, seconds: float) -> None:
        self.histograms[name].observe(seconds)

    def snapshot(self) -> WorkerMetrics:
        counters = [
            CounterSample(name=name, labels=dict(labels), value=value)
            for (name, labels), value in sorted(self.counters.items())
        ]
        return WorkerMetrics(
            version=VERSION,
            counters=counters,
            histograms={name: h.to_dict() for name, h in self.histograms.items()},
            last_successful_tick=self.last_success,
        )

    def write(self) -> None:
        """Best-effort: a state directory that cannot take it loses this write only."""
        with contextlib.suppress(OSError, ValueError):
            write_metrics(self.account, self.snapshot(), self._file)

    # --- what is observed -------------------------------------------------------------

    def request(self, endpoint: str, outcome: str) -> None:
        """The transport's ``on_request``: one request to ``endpoint`` ended so."""
        endpoint = endpoint if endpoint in ENDPOINTS else OTHER
        outcome = outcome if outcome in OUTCOMES else OTHER
        self.count("api_requests_total", endpoint=endpoint, outcome=outcome)
        if endpoint == SESSION_ENDPOINT and outcome == "2xx":
            self.count("token_renewals_total")
        if outcome == "auth_rejected":
            self.count("auth_rejections_total")

    def tick_started(self, tick: Tick) -> None:
        self._tick_began = time.monotonic()

    def tick_ended(self, tick: Tick, *, failed: bool, healthy: bool) -> None:
        """Counts the tick (lateness, duration, failed), then writes the file."""
        self.count("ticks_total")
        self.observe("tick_lateness_seconds", tick.lateness)
        self.observe("tick_duration_seconds", time.monotonic() - self._tick_began)
        if failed:
            self.count("ticks_failed_total")
        elif healthy:
            self.last_success = time.time()
        self.write()

    def order_sent(self, side: str, error: BaseException | None, seconds: float) -> None:
        side = "buy" if str(side).upper() == "BUY" else "sell"
        self.count("orders_total", side=side, result=order_result(error))
        self.observe("order_roundtrip_seconds", seconds)


class Histogram:
    """Cumulative-free bucket counts (one per bound, plus +Inf), a sum and a count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.sum += value

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


def order_result(error: BaseException | None) -> str:
    """An order's result: ``filled`` (acknowledged), ``refused``, ``uncertain``, ``failed``."""
    if error is None:
        return "filled"
    if isinstance(error, OrderRejected):
        return "refused"
    if isinstance(error, OrderUncertain):
        return "uncertain"
    return "failed"
