"""An account worker's own metrics: plain counters and histograms, written to metrics.json.

The worker keeps them in-process (no ``prometheus_client`` here) and rewrites
``metrics.json`` atomically at most once per tick, best-effort: a failed write is
dropped and never stands in the way of an order. The supervisor's metrics child
(:mod:`multirun.services.metrics`) reads the file at each scrape. :func:`install` hooks a worker
from the outside (its tick, its order sends, its client's requests), so the worker
itself does not know about metrics.

Every label value is from a small fixed set: a side, a result, an endpoint name of the
API, an outcome class. Never a trade id, an orderRef, a URL or a secret.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from multirun.core import procutil
from multirun.core.errors import (
    ApiError,
    AuthError,
    NetworkError,
    OrderRejected,
    OrderUncertain,
)
from multirun.core.states import State

if TYPE_CHECKING:
    from multirun.account.worker import Worker

VERSION = 1
# Upper bounds, seconds (Prometheus adds +Inf).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUCKETS = {
    "tick_lateness_seconds": LATENCY_BUCKETS,
    "tick_duration_seconds": LATENCY_BUCKETS,
    "order_roundtrip_seconds": LATENCY_BUCKETS,
}
SESSION_ENDPOINT = "session"
_ENDPOINT = re.compile(r"^[a-z_]{1,40}$")
T = TypeVar("T")
Labels = tuple[tuple[str, str], ...]


class Telemetry:
    """Counters and histograms of one account, and the file they are written to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counters: dict[tuple[str, Labels], float] = {}
        self.histograms = {name: Histogram(bounds) for name, bounds in BUCKETS.items()}
        self.last_success: float | None = None  # wall time of the last tick that did not fail

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + amount

    def observe(self, name: str, seconds: float) -> None:
        self.histograms[name].observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "counters": [
                {"name": name, "labels": dict(labels), "value": value}
                for (name, labels), value in sorted(self.counters.items())
            ],
            "histograms": {name: h.to_dict() for name, h in self.histograms.items()},
            "last_successful_tick": self.last_success,
        }

    def write(self) -> None:
        """Best-effort: a state directory that cannot take it loses this write only."""
        with contextlib.suppress(OSError, ValueError):
            procutil.write_json_atomic(self.path, self.snapshot())

    # --- what is observed -------------------------------------------------------------

    def request(self, endpoint: str, outcome: str) -> None:
        endpoint = endpoint if _ENDPOINT.match(endpoint) else "other"
        self.count("api_requests_total", endpoint=endpoint, outcome=outcome)
        if endpoint == SESSION_ENDPOINT and outcome == "2xx":
            self.count("token_renewals_total")
        if outcome == "auth_rejected":
            self.count("auth_rejections_total")


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


def outcome_of(error: BaseException | None) -> str:
    """A request's outcome class: ``2xx``, ``4xx``, ``5xx``, ``auth_rejected``,
    ``refused`` (an HTTP 200 refusal), ``timeout`` or ``dropped``."""
    if error is None:
        return "2xx"
    if isinstance(error, AuthError):
        return "auth_rejected"
    if isinstance(error, NetworkError):
        text = str(error)
        timed_out = "within" in text or "timed out" in text
        return "timeout" if timed_out else "dropped"
    if isinstance(error, ApiError) and error.status is not None:
        return "refused" if error.status == 200 else f"{error.status // 100}xx"
    if isinstance(error, ApiError):
        return "protocol"
    return "dropped"  # interrupted by a stop, or cut short otherwise


def order_result(error: BaseException | None) -> str:
    """An order's result: ``filled`` (acknowledged), ``refused``, ``uncertain``, ``failed``."""
    if error is None:
        return "filled"
    if isinstance(error, OrderRejected):
        return "refused"
    if isinstance(error, OrderUncertain):
        return "uncertain"
    return "failed"


def install(worker: Worker, path: Path) -> Telemetry:
    """Count what ``worker`` does into a :class:`Telemetry` written to ``path`` after each
    tick: its ticks (lateness, duration, failed), its orders (side, result, round trip)
    and its client's requests (endpoint, outcome). Wraps the instances' methods only."""
    telemetry = Telemetry(path)
    tick, send = worker.tick, worker._send

    def timed_tick(ticked: Any) -> None:
        began, failures = time.monotonic(), worker.failures
        try:
            tick(ticked)
        finally:
            telemetry.count("ticks_total")
            telemetry.observe("tick_lateness_seconds", ticked.lateness)
            telemetry.observe("tick_duration_seconds", time.monotonic() - began)
            if worker.failures > failures:
                telemetry.count("ticks_failed_total")
            elif worker.failures == 0 and worker.state != State.HALTED:
                telemetry.last_success = time.time()
            telemetry.write()

    def timed_send(intent: Any) -> Any:
        began, error = time.monotonic(), None
        try:
            return send(intent)
        except BaseException as exc:
            error = exc
            raise
        finally:
            side = "buy" if str(intent.side).upper() == "BUY" else "sell"
            telemetry.count("orders_total", side=side, result=order_result(error))
            telemetry.observe("order_roundtrip_seconds", time.monotonic() - began)

    setattr(worker, "tick", timed_tick)  # noqa: B010 (an instance attribute, on purpose)
    setattr(worker, "_send", timed_send)  # noqa: B010
    transport = getattr(worker.client, "_transport", None)
    if transport is not None:
        setattr(transport, "send", observed(transport.send, telemetry.request))  # noqa: B010
    telemetry.write()
    return telemetry


def observed(call: Callable[..., T], observe: Callable[[str, str], None]) -> Callable[..., T]:
    """``call`` (a transport's ``send(method, endpoint, ...)``), reporting each request's
    endpoint and outcome to ``observe``."""

    def send(method: str, endpoint: str, *args: Any, **kwargs: Any) -> T:
        error: BaseException | None = None
        try:
            return call(method, endpoint, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            observe(endpoint, outcome_of(error))

    return send
