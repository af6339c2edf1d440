"""The supervisor's ``/metrics``: one Prometheus registry, every account under an ``account`` label.

A supervised service child (see :func:`multirun.supervisor.launch.programs`) runs
``prometheus_client``'s HTTP server with one custom collector. At each scrape it reads
the state directory: ``supervisor.json`` (states, restarts), each account's
``status.json`` (open trades, NAV, P&L, HALTED) and ``metrics.json`` (the worker's
counters and histograms, see :mod:`multirun.account.telemetry`). Nothing is kept between
scrapes, so a restarted worker's counters restart from zero, as Prometheus expects of
a counter whose process restarted. Every label combination of every counter is shown
for each account from its first scrape, at 0 until counted: a series born at 1 would
hide an account's first uncertain order from ``increase()`` (Prometheus' advice:
initialise your metrics). No label holds a secret, a trade id or any other unbounded
value: labels are account names (from runner.yaml) and the small fixed sets of
:data:`multirun.account.telemetry.LABEL_VALUES`. See docs/metrics.md for the list.
"""

from __future__ import annotations

import functools
import platform
import signal
import threading
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import multirun
from multirun.account.telemetry import BUCKETS, LABEL_VALUES
from multirun.config.specs import MetricsSpec
from multirun.core import statefiles, states
from multirun.core.errors import FatalError
from multirun.core.statedir import StateDir
from multirun.core.statefiles import ProcessEntry, WorkerMetrics, WorkerStatus
from multirun.core.states import ALIVE, STATES, State

ACCOUNT = "account"
# The worker's counters (metrics.json names): help text and their labels past `account`
# (each label's values: telemetry.LABEL_VALUES).
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ticks_total": ("Ticks run.", ()),
    "ticks_failed_total": ("Ticks that failed (an error, a strategy timeout).", ()),
    "orders_total": ("Orders sent, by side and result.", ("side", "result")),
    "api_requests_total": ("API requests, by endpoint and outcome.", ("endpoint", "outcome")),
    "token_renewals_total": ("Session tokens fetched.", ()),
    "auth_rejections_total": ("Requests the server refused as unauthorized.", ()),
}
HISTOGRAMS = {
    "tick_lateness_seconds": "How late a tick started after its grid point + wake-up offset.",
    "tick_duration_seconds": "How long a tick took.",
    "order_roundtrip_seconds": "How long sending an order took, its lookups included.",
}
# status.json fields shown as gauges: metric name, help.
STATUS_GAUGES = {
    "open_trades": ("open_trades", "Trades of ours open (journaled)."),
    "nav": ("nav", "Net asset value, account currency."),
    "realized_pl_today": ("realized_pl_today", "Realized P&L since 00:00 UTC, account currency."),
    "unrealized_pl": ("unrealized_pl", "Unrealized P&L of the open trades, account currency."),
    "day_pnl": ("day_pnl", "P&L since the day's start (risk.day_starts), realized + unrealized."),
    "drawdown": ("drawdown", "Equity below its peak since the start (or a resume)."),
}


class StateDirCollector(Collector):
    """Reads a state directory at each scrape (see the module docstring). ``processes``:
    each account's process entry; by default ``supervisor.json``'s (``run-account``
    under systemd or Kubernetes has no supervisor: it gives its own)."""

    def __init__(
        self, state_dir: Path, *, processes: statefiles.ProcessEntries | None = None
    ) -> None:
        self.layout = StateDir(state_dir)
        self.processes = processes or functools.partial(statefiles.supervised, self.layout)

    def collect(self) -> Iterator[Metric]:
        accounts = self.processes()
        build = GaugeMetricFamily(
            "multirun_build_info", "multirun's version.", labels=["version", "python"]
        )
        build.add_metric([multirun.__version__, platform.python_version()], 1)
        yield build
        per_state = GaugeMetricFamily(
            "multirun_accounts", "Accounts in each state.", labels=["state"]
        )
        state = GaugeMetricFamily(
            "multirun_account_state",
            "1 for the account's current state.",
            labels=[ACCOUNT, "state"],
        )
        up = GaugeMetricFamily("multirun_account_up", "1 while its worker runs.", labels=[ACCOUNT])
        halted = GaugeMetricFamily("multirun_account_halted", "1 when HALTED.", labels=[ACCOUNT])
        paused = GaugeMetricFamily(
            "multirun_account_paused",
            "1 when PAUSED (no new opens: an operator, a money limit, the trading hours).",
            labels=[ACCOUNT],
        )
        restarts = CounterMetricFamily(
            "multirun_account_restarts", "Restarts of its worker.", labels=[ACCOUNT]
        )
        last_ok = GaugeMetricFamily(
            "multirun_last_successful_tick_timestamp_seconds",
            "When the last tick that did not fail ran (Unix time).",
            labels=[ACCOUNT],
        )
        gauges = {
            key: GaugeMetricFamily(f"multirun_{name}", text, labels=[ACCOUNT])
            for key, (name, text) in STATUS_GAUGES.items()
        }
        counters = {
            key: CounterMetricFamily(f"multirun_{key}", text, labels=[ACCOUNT, *labels])
            for key, (text, labels) in COUNTERS.items()
        }
        histograms = {
            key: HistogramMetricFamily(f"multirun_{key}", text, labels=[ACCOUNT])
            for key, text in HISTOGRAMS.items()
        }
        counts = dict.fromkeys(STATES, 0)
        for name, proc in sorted(accounts.items()):
            files = self.layout.account(name)
            status = statefiles.read_worker_status(files)
            current = account_state(proc, status)
            counts[current] = counts.get(current, 0) + 1
            for each in STATES:
                state.add_metric([name, each], 1 if each == current else 0)
            up.add_metric([name], 1 if proc.get("pid") and current in ALIVE | WORKER_STATES else 0)
            halted.add_metric([name], 1 if current == State.HALTED else 0)
            paused.add_metric([name], 1 if current == State.PAUSED else 0)
            restarts.add_metric([name], _number(proc.get("restarts")) or 0)
            for key, family in gauges.items():
                value = _number(status.get(key))
                if value is not None:
                    family.add_metric([name], value)
            _add_worker(name, statefiles.read_metrics(files), counters, histograms, last_ok)
        for each, count in counts.items():
            per_state.add_metric([each], count)
        yield from (per_state, state, up, halted, paused, restarts, last_ok, *gauges.values())
        yield from (*counters.values(), *histograms.values())


WORKER_STATES = frozenset({State.HALTED, State.PAUSED})  # a live worker's own states


def account_state(proc: ProcessEntry, status: WorkerStatus) -> State:
    """The supervisor's state, HALTED or PAUSED when its running worker says so (as
    ``status`` shows: :func:`~multirun.core.statefiles.worker_says`)."""
    current = states.parse(proc.get("state"))
    said = statefiles.worker_says(proc, status)
    return states.parse(said, current) if current in ALIVE and said else current


def _add_worker(
    name: str,
    data: WorkerMetrics,
    counters: dict[str, CounterMetricFamily],
    histograms: dict[str, HistogramMetricFamily],
    last_ok: GaugeMetricFamily,
) -> None:
    """One account's metrics.json into the families (unknown names and labels ignored)."""
    for (key, *values), value in counter_rows(data).items():
        counters[key].add_metric([name, *values], value)
    for key, family in histograms.items():
        shown = (data.get("histograms") or {}).get(key) or {}
        bounds, counts = list(BUCKETS[key]), shown.get("counts")
        if not isinstance(counts, list) or len(counts) != len(bounds) + 1:
            counts = [0] * (len(bounds) + 1)
        running, buckets = 0.0, []
        for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
            running += _number(count) or 0
            buckets.append((bound, running))
        family.add_metric([name], buckets, _number(shown.get("sum")) or 0.0)
    moment = _number(data.get("last_successful_tick"))
    if moment is not None:
        last_ok.add_metric([name], moment)


def counter_rows(data: WorkerMetrics) -> dict[tuple[str, ...], float]:
    """``(counter, *label values) -> value`` for every combination of the declared label
    values, 0 where ``data`` (a metrics.json) counted nothing; a value outside the
    declared sets is not shown (the worker folds those into ``other``)."""
    rows = {
        (key, *values): 0.0
        for key, (_text, labels) in COUNTERS.items()
        for values in product(*(LABEL_VALUES[label] for label in labels))
    }
    for entry in data.get("counters") or []:
        key, labels = entry.get("name"), entry.get("labels") or {}
        value = _number(entry.get("value"))
        if key not in COUNTERS or value is None or not isinstance(labels, dict):
            continue
        row = (key, *(str(labels.get(label, "")) for label in COUNTERS[key][1]))
        if row in rows:
            rows[row] = value
    return rows


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def serve(spec: MetricsSpec, state_dir: Path, ready: Any) -> int:
    """The metrics child: serve ``/metrics`` until SIGTERM; announce its URL once bound."""
    registry = CollectorRegistry()
    registry.register(StateDirCollector(state_dir))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        server, _thread = start_http_server(spec.port, addr=spec.host, registry=registry)
    except OSError as exc:
        raise FatalError(f"cannot serve /metrics on {spec.host}:{spec.port}: {exc}") from None
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else str(host)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/metrics"
    if not spec.loopback:
        print(f"warning: /metrics is served on {url}, reachable from other hosts "
              "(no authentication)", flush=True)  # fmt: skip
    print(f"serving /metrics on {url}", flush=True)
    ready(url)
    while not done.wait(1.0):
        pass
    server.shutdown()
    return 0
