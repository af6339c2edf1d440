"""The shapes of the files in a state directory, and their one reader and writer each.

:mod:`~multirun.core.statedir` says where each file lives; this module says what is in
it. Writers replace a file atomically (0600, never torn); readers are tolerant: a file
missing, unreadable or not a JSON object reads as ``{}``, and each field is optional to
a reader (files written by older versions lack newer fields), hence ``total=False``.

- ``supervisor.json`` (:class:`SupervisorFile`): the supervisor's view, written by the
  arbiter; read by ``status``, ``logs``, ``stop``, metrics and alerts.
- ``<account>/status.json`` (:class:`WorkerStatus`): one worker's own view, written by
  the worker; read by ``status``, ``health``, metrics and alerts.
- ``<account>/metrics.bin`` (:class:`WorkerMetrics`, in a :mod:`~multirun.core.slotfile`
  laid out by :class:`MetricsLayout`): one worker's counters and histograms, updated in
  place by its telemetry; read by the metrics service.
"""

from __future__ import annotations

import functools
import json
import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

from multirun.core import slotfile
from multirun.core.procutil import RewrittenJson, read_json, write_json_atomic
from multirun.core.statedir import AccountDir, StateDir


class ProcessEntry(TypedDict, total=False):
    """One supervised child in ``supervisor.json`` (``accounts`` and ``services``)."""

    state: str  # a core.states.State
    pid: int | None
    started_utc: str | None
    restarts: int
    last_exit: str | None
    last_error: str | None
    next_start_utc: str | None  # when a BACKOFF child starts again
    note: str | None
    # An account: the worker's own state (RUNNING, HALTED, PAUSED, STOPPED) and why, as it
    # last told the supervisor over its pipe; true when its status.json cannot be written.
    worker_state: str | None
    worker_reason: str | None


# Where a reader gets each account's process entry: supervisor.json's ``accounts`` by
# default, or a process of its own (``run-account`` under systemd has no supervisor).
ProcessEntries = Callable[[], Mapping[str, ProcessEntry]]


class LeftOpenEntry(TypedDict, total=False):
    """What a stop left open on one account (``supervisor.json``'s ``left_open``)."""

    on_stop: str
    error: str | None
    trades: list[dict[str, Any]]  # supervisor.final_report.HeldTrade, as a dict


class FleetRiskEntry(TypedDict, total=False):
    """``supervisor.json``'s ``risk``: every account's money summed from their pipes, and
    the file-level limits (``risk:``) they are held to."""

    day_pnl: float | None  # the day's P&L, summed
    equity: float | None  # the equity, summed
    peak: float | None  # the summed equity's peak since the start (or a resume)
    accounts: int  # how many accounts said something
    max_daily_loss: float | None
    max_drawdown: float | None
    on_breach: str | None
    breach: str | None  # the breach acted on (latched until resume): its reason
    breach_utc: str | None


class SupervisorFile(TypedDict, total=False):
    """``state_dir/supervisor.json``."""

    pid: int
    config: str  # the runner.yaml it was started from
    started_utc: str
    updated_utc: str
    stopping: bool
    stop_timeout_s: float
    # while stopping: when every child will be gone at the latest (`multirun stop` waits
    # for it, plus a margin for the final report); None otherwise
    stop_deadline_utc: str | None
    announced: dict[str, str]  # each service's ready line (e.g. the metrics address)
    accounts: dict[str, ProcessEntry]
    services: dict[str, ProcessEntry]
    risk: FleetRiskEntry  # the file-level money limits and the sums they hold (fleet_risk)
    # written once, by the final save of a stop:
    exit_code: int
    stopped_utc: str
    left_open: dict[str, LeftOpenEntry]
    final_lines: list[str]  # the last lines it printed: what is held, the swept, the verdict
    # its first lines on what the previous supervisor left when that one died without a stop
    # (supervisor/previous_run.py): the notifier tells them
    previous_died: list[str]


class HeldPosition(TypedDict, total=False):
    """One held trade in ``status.json``'s ``positions``."""

    order_ref: str
    instrument: str
    side: str
    volume: float
    entry_price: float | None
    unrealized_pl: float | None


class WorkerStatus(TypedDict, total=False):
    """``<account>/status.json``: what one worker says of itself."""

    name: str
    pid: int
    state: str  # a core.states.State: RUNNING, HALTED or STOPPED
    started_utc: str | None
    last_tick_utc: str | None
    next_tick_utc: str | None
    open_trades: int
    token_expires_utc: str | None
    last_error: str | None
    halted_reason: str | None
    ticks: int
    orders_sent: int
    orders_refused: int  # of orders_sent, refused by the server (the `rejected` alert)
    updated_utc: str | None
    strategy: str
    interval_s: float
    tick_offset_ms: int | None  # each tick starts this long after its grid point
    consecutive_failures: int
    consecutive_order_failures: int
    uncertain_orders: list[str]
    open_on_server: int | None
    blocked_by: str | None
    throttled_until_utc: str | None  # the server's Retry-After: no request before then
    stop_reason: str | None
    positions: list[HeldPosition]
    nav: float | None
    unrealized_pl: float | None
    realized_pl_today: float
    # the journal replaced a damaged one, set aside: when, why, where the old one is kept
    journal_rebuilt: str | None
    # issue 24: why nothing opens (PAUSED: an operator, a money limit, the trading hours),
    # since and until when (a daily-loss pause lifts at the next day's start); the money
    # limits' figures: P&L since the day's start, equity estimate, drawdown from its peak
    paused_reason: str | None
    paused_since_utc: str | None
    paused_until_utc: str | None
    day_pnl: float
    equity: float | None
    drawdown: float


class CounterSample(TypedDict):
    name: str
    labels: dict[str, str]
    value: float


class WorkerMetrics(TypedDict, total=False):
    """``<account>/metrics.bin``, decoded: one worker's own counters and histograms."""

    version: int
    counters: list[CounterSample]
    histograms: dict[str, dict[str, Any]]
    last_successful_tick: float | None


def condition_line(state: str, reason: str | None) -> str:
    """The line a worker writes on its pipe when its state or halted reason changes (one
    JSON object, short enough for one atomic pipe write)."""
    return json.dumps({"state": state, "reason": None if reason is None else reason[:400]})


def read_condition(line: str) -> tuple[str, str | None] | None:
    """A :func:`condition_line`'s state and reason; None for any other line ("up")."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return None
    reason = data.get("reason")
    return data["state"], reason if isinstance(reason, str) else None


# The worker's own states that stand in for the supervisor's RUNNING (as status shows them).
WORKER_SAYS = ("HALTED", "PAUSED")


def worker_says(proc: ProcessEntry, status: WorkerStatus) -> str | None:
    """HALTED or PAUSED when the account's running worker says so: on its pipe first
    (``worker_state``, true when no file can be written: a full disk), else in its
    status.json (same pid); None when the supervisor's state stands. The one rule
    ``status``, ``health``, metrics and alerts show an account's state by."""
    said = proc.get("worker_state")
    if said in WORKER_SAYS:
        return said
    same = proc.get("pid") is not None and status.get("pid") == proc.get("pid")
    written = status.get("state")
    return written if same and written in WORKER_SAYS else None


# What the supervisor may ask of a worker on its command pipe (see :func:`command_line`).
WORKER_COMMANDS = ("pause", "resume", "flatten")


def money_line(day_pnl: float, equity: float | None) -> str:
    """The line a worker writes on its pipe, at most once a tick and only when it changed:
    its P&L since the day's start (realized + unrealized) and its equity (NAV estimate, or
    None), which the supervisor sums across accounts (never from files: a full disk)."""
    return json.dumps(
        {"day_pnl": round(day_pnl, 2), "equity": None if equity is None else round(equity, 2)}
    )


def read_money(line: str) -> tuple[float, float | None] | None:
    """A :func:`money_line`'s day P&L and equity; None for any other line."""
    data = _json_object(line)
    if data is None or isinstance(data.get("day_pnl"), bool):
        return None
    pnl, equity = data.get("day_pnl"), data.get("equity")
    if not isinstance(pnl, int | float) or not (equity is None or isinstance(equity, int | float)):
        return None
    return float(pnl), None if equity is None else float(equity)


def command_line(cmd: str, reason: str) -> str:
    """The line the supervisor writes on a worker's command pipe: one of
    :data:`WORKER_COMMANDS` and why (shown as the worker's PAUSED reason); one JSON object,
    short enough for one atomic pipe write."""
    return json.dumps({"cmd": cmd, "reason": reason[:400]})


def read_command(line: str) -> tuple[str, str] | None:
    """A :func:`command_line`'s command and reason; None for anything else."""
    data = _json_object(line)
    if data is None or data.get("cmd") not in WORKER_COMMANDS:
        return None
    reason = data.get("reason")
    return str(data["cmd"]), reason if isinstance(reason, str) else ""


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class SupervisorRecord(TypedDict, total=False):
    """``<runtime dir>/supervisor-<pid>.json``: a running supervisor, found there when its
    state directory is gone (written at its start, removed at its exit)."""

    pid: int
    config: str | None
    state_dir: str


def supervisor_record(runtime: Path, pid: int) -> Path:
    return runtime / f"supervisor-{pid}.json"


def write_supervisor_record(runtime: Path, data: SupervisorRecord) -> None:
    """Raises OSError, as :func:`write_supervisor`."""
    write_json_atomic(supervisor_record(runtime, data["pid"]), data, compact=True)


def read_supervisor_records(runtime: Path) -> list[SupervisorRecord]:
    """Every record in ``runtime`` (stale ones too: the caller checks each pid)."""
    found = []
    for path in sorted(runtime.glob("supervisor-*.json")):
        data = read_json(path)
        if data is not None and isinstance(data.get("pid"), int):
            found.append(cast(SupervisorRecord, data))
    return found


def read_supervisor(layout: StateDir) -> SupervisorFile:
    return cast(SupervisorFile, read_json(layout.supervisor_json) or {})


def supervised(layout: StateDir) -> Mapping[str, ProcessEntry]:
    """Each account's process entry as the supervisor last wrote it (the default
    :data:`ProcessEntries` of a reader)."""
    return read_supervisor(layout).get("accounts") or {}


def write_supervisor(layout: StateDir, data: SupervisorFile, *, compact: bool = True) -> None:
    """Raises OSError (a full disk, a directory gone): the caller decides what it costs."""
    write_json_atomic(layout.supervisor_json, data, compact=compact)


def read_worker_status(account: AccountDir) -> WorkerStatus:
    return cast(WorkerStatus, read_json(account.status) or {})


def write_worker_status(
    account: AccountDir, data: WorkerStatus, rewritten: RewrittenJson | None = None
) -> None:
    """Raises OSError, as :func:`write_supervisor`. ``rewritten``: the worker's own writer
    of ``account.status`` (it rewrites the file after every tick: :class:`RewrittenJson`)."""
    if rewritten is not None:
        rewritten.write(data)
    else:
        write_json_atomic(account.status, data, compact=True)


def read_metrics(account: AccountDir) -> WorkerMetrics:
    """The worker's counters as they are now ({} when there is no readable file)."""
    try:
        raw = account.metrics.read_bytes()
    except OSError:
        return {}
    return metrics_of(raw)


def metrics_of(raw: bytes) -> WorkerMetrics:
    """A metrics.bin's bytes as :class:`WorkerMetrics` ({} when they are not one): for a
    reader that keeps the bytes too (to tell a change at its next read)."""
    found = slotfile.parse(raw)
    return {} if found is None else decode_metrics(*found)


def decode_metrics(header: bytes, slots: array[float]) -> WorkerMetrics:
    """A metrics slot file's header and slots as :class:`WorkerMetrics` ({} when they do
    not describe each other)."""
    layout = _layout_of(header)
    if layout is None or layout.size != len(slots):
        return {}
    return layout.decode(slots)


@functools.lru_cache(maxsize=4)
def _layout_of(header: bytes) -> MetricsLayout | None:
    """The layout a header describes, made once: every worker of a version writes the
    same header (10 KB of JSON: parsed at every scrape, 50 accounts, it was most of one)."""
    try:
        found = json.loads(header.decode())
    except ValueError:
        return None
    return MetricsLayout.from_header(found) if isinstance(found, dict) else None


Labels = tuple[tuple[str, str], ...]  # a counter's labels, sorted by name


class MetricsLayout:
    """Which slot of ``metrics.bin`` holds what: each counter (a name and its labels),
    then each histogram's bucket counts (one per bound, then +Inf) and its sum, then the
    last successful tick's time (NaN: none yet). The worker's telemetry writes the
    header this makes; a reader makes the same layout back from it."""

    VERSION = 1

    def __init__(
        self, counters: Iterable[tuple[str, Labels]], histograms: Mapping[str, Iterable[float]]
    ) -> None:
        self.counters = {key: index for index, key in enumerate(counters)}
        self.histograms: dict[str, tuple[tuple[float, ...], int]] = {}  # bounds, first slot
        at = len(self.counters)
        for name, bounds in histograms.items():
            self.histograms[name] = (tuple(bounds), at)
            at += len(self.histograms[name][0]) + 2  # the buckets, +Inf, the sum
        self.last_successful_tick = at
        self.size = at + 1

    @property
    def header(self) -> dict[str, Any]:
        return {
            "version": self.VERSION,
            "counters": [[name, dict(labels)] for name, labels in self.counters],
            "histograms": [[name, list(bounds)] for name, (bounds, _) in self.histograms.items()],
        }

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> MetricsLayout | None:
        """The layout ``header`` describes; None for another version's or a damaged one."""
        if header.get("version") != cls.VERSION:
            return None
        try:
            counters = [
                (str(n), tuple(sorted(dict(labels).items()))) for n, labels in header["counters"]
            ]
            histograms = {str(n): [float(b) for b in bounds] for n, bounds in header["histograms"]}
        except (KeyError, TypeError, ValueError):
            return None
        return cls(counters, histograms)

    def empty(self) -> array[float]:
        """Slots for nothing counted yet."""
        slots = array("d", bytes(8 * self.size))
        slots[self.last_successful_tick] = math.nan
        return slots

    def decode(self, slots: array[float]) -> WorkerMetrics:
        counters = [
            CounterSample(name=name, labels=dict(labels), value=slots[index])
            for (name, labels), index in self.counters.items()
            if slots[index]
        ]
        histograms = {}
        for name, (bounds, first) in self.histograms.items():
            end = first + len(bounds) + 1  # the sum's slot, after the buckets and +Inf
            histograms[name] = {
                "bounds": list(bounds),
                "counts": list(slots[first:end]),  # floats: a damaged file's NaN reads
                "sum": slots[end],
            }
        last = slots[self.last_successful_tick]
        return WorkerMetrics(
            version=self.VERSION,
            counters=counters,
            histograms=histograms,
            last_successful_tick=None if math.isnan(last) else last,
        )
