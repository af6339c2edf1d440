"""The supervisor's ``/metrics``: one page, every account under an ``account`` label.

A supervised service child (see :func:`multirun.supervisor.launch.programs`) serves it
(:mod:`multirun.services.exposition`). At each scrape it reads the state directory:
``supervisor.json`` (states, restarts), each account's ``status.json`` (open trades, NAV,
P&L, HALTED) and ``metrics.bin`` (the worker's counters and histograms, which it updates
in place: see :mod:`multirun.account.telemetry`). An account's lines are rendered again
only when one of these changed (:class:`StateDirPage`); what the files say is never older
on the page than at the scrape. A restarted worker's counters restart from zero, as Prometheus
expects of a counter whose process restarted. Every label combination of every counter
is shown for each account from its first scrape, at 0 until counted: a series born at 1
would hide an account's first uncertain order from ``increase()`` (Prometheus' advice:
initialise your metrics). None is left out as impossible: every endpoint can get every
outcome (a proxy's 3xx, a server's 1xx are ``other``), and the ``other`` endpoint is
there for the one the list does not know yet, which its zero makes visible. No label
holds a secret, a trade id or any other unbounded value: labels are account names (from
runner.yaml) and the small fixed sets of :data:`multirun.account.telemetry.LABEL_VALUES`.
See docs/metrics.md for the list.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import signal
import threading
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any, cast

import multirun
from multirun.account.telemetry import BUCKETS, COUNTER_LABELS, LABEL_VALUES
from multirun.config.specs import MetricsSpec
from multirun.core import statefiles, states
from multirun.core.clock import Clock, SystemClock
from multirun.core.errors import FatalError
from multirun.core.procutil import FileSignature, signature
from multirun.core.statedir import AccountDir, StateDir
from multirun.core.statefiles import ProcessEntry, WorkerMetrics, WorkerStatus
from multirun.core.states import ALIVE, STATES, State
from multirun.services.exposition import EOF, Family, number, sample_prefix, start_server

ACCOUNT = "account"
# The worker's counters (telemetry.COUNTER_LABELS): help text and their labels past
# `account` (each label's values: telemetry.LABEL_VALUES).
COUNTER_HELP = {
    "ticks_total": "Ticks run.",
    "ticks_failed_total": "Ticks that failed (an error, a strategy timeout).",
    "orders_total": "Orders sent, by side and result.",
    "api_requests_total": "API requests, by endpoint and outcome.",
    "token_renewals_total": "Session tokens fetched.",
    "auth_rejections_total": "Requests the server refused as unauthorized.",
}
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    key: (COUNTER_HELP[key], labels) for key, labels in COUNTER_LABELS.items()
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


FAMILY_BUILD = Family("multirun_build_info", "gauge", "multirun's version.")
FAMILY_ACCOUNTS = Family("multirun_accounts", "gauge", "Accounts in each state.")
FAMILY_STATE = Family("multirun_account_state", "gauge", "1 for the account's current state.")
FAMILY_UP = Family("multirun_account_up", "gauge", "1 while its worker runs.")
FAMILY_HALTED = Family("multirun_account_halted", "gauge", "1 when HALTED.")
FAMILY_PAUSED = Family(
    "multirun_account_paused",
    "gauge",
    "1 when PAUSED (no new opens: an operator, a money limit, the trading hours).",
)
FAMILY_RESTARTS = Family("multirun_account_restarts_total", "counter", "Restarts of its worker.")
FAMILY_LAST_OK = Family(
    "multirun_last_successful_tick_timestamp_seconds",
    "gauge",
    "When the last tick that did not fail ran (Unix time).",
)
GAUGE_FAMILIES = {
    key: Family(f"multirun_{name}", "gauge", text) for key, (name, text) in STATUS_GAUGES.items()
}
COUNTER_FAMILIES = {
    key: Family(f"multirun_{key}", "counter", text) for key, (text, _labels) in COUNTERS.items()
}
HISTOGRAM_FAMILIES = {
    key: Family(f"multirun_{key}", "histogram", text) for key, text in HISTOGRAMS.items()
}
# The families with one block of lines per account, in the page's order.
PER_ACCOUNT = (
    FAMILY_STATE,
    FAMILY_UP,
    FAMILY_HALTED,
    FAMILY_PAUSED,
    FAMILY_RESTARTS,
    FAMILY_LAST_OK,
    *GAUGE_FAMILIES.values(),
    *COUNTER_FAMILIES.values(),
    *HISTOGRAM_FAMILIES.values(),
)
# Each counter's label combinations (values past `account`), every one shown from the start.
GRID: dict[str, tuple[tuple[str, ...], ...]] = {
    key: tuple(product(*(LABEL_VALUES[label] for label in labels)))
    for key, (_text, labels) in COUNTERS.items()
}
# How close to now a file's mtime may be for its cached lines to be trusted: a write
# within the file system's timestamp granularity (up to 2 s: FAT; 1 s: some network
# file systems) after our read could leave mtime, size and inode as they were.
RACY_S = 2.0
WORKER_STATES = frozenset({State.HALTED, State.PAUSED})  # a live worker's own states


class StateDirPage:
    """The ``/metrics`` page of a state directory (see the module docstring), rendered at
    each scrape from each account's lines. An account's lines are kept between scrapes
    with what they were read from (its supervisor.json entry; the inode, mtime and size
    of its status.json; the bytes of its metrics.bin, read at every scrape: the worker
    updates it in place, its mtime does not follow) and rendered again only when one
    changed, or when status.json was written too recently to tell (:data:`RACY_S`): a
    kept block is never older than its files. ``processes``: each account's process
    entry; by default ``supervisor.json``'s (``run-account`` under systemd or Kubernetes
    has no supervisor: it gives its own)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        processes: statefiles.ProcessEntries | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.layout = StateDir(state_dir)
        self.processes = processes or functools.partial(statefiles.supervised, self.layout)
        self.clock = clock or SystemClock()
        self.build = sample_prefix(
            FAMILY_BUILD.name,
            (("version", multirun.__version__), ("python", platform.python_version())),
        )
        self._kept: dict[str, AccountBlock] = {}
        self._lock = threading.Lock()  # two scrapes at once share the kept blocks
        self.reread = 0  # accounts whose files were read at the last scrape

    def render(self, openmetrics: bool = False) -> bytes:
        """The page: every family once, its samples together, accounts sorted by name."""
        with self._lock:
            blocks = self._blocks()
        counts = dict.fromkeys(STATES, 0)
        for block in blocks:
            counts[block.state] = counts.get(block.state, 0) + 1
        parts = [FAMILY_BUILD.header(openmetrics), self.build, "1.0\n"]
        parts.append(FAMILY_ACCOUNTS.header(openmetrics))
        for state, count in counts.items():
            parts.append(sample_prefix(FAMILY_ACCOUNTS.name, (("state", state),)))
            parts.append(f"{number(count)}\n")
        for index, family in enumerate(PER_ACCOUNT):
            parts.append(family.header(openmetrics))
            parts.extend(block.lines[index] for block in blocks)
        if openmetrics:
            parts.append(EOF)
        return "".join(parts).encode()

    def _blocks(self) -> list[AccountBlock]:
        """Each listed account's block, read again only where its files changed."""
        accounts = self.processes()
        now = self.clock.time()
        kept, self._kept, self.reread = self._kept, {}, 0
        for name, proc in sorted(accounts.items()):
            files = self.layout.account(name)
            block = kept.get(name)
            counts = _read_bytes(files.metrics)
            if block is None or not block.still(proc, signature(files.status), counts):
                block = AccountBlock.read(name, proc, files, counts, now, block)
                self.reread += 1
            self._kept[name] = block
        return list(self._kept.values())


class AccountBlock:
    """One account's lines in each per-account family (:data:`PER_ACCOUNT`'s order), its
    state, and what they were rendered from."""

    def __init__(
        self,
        prefixes: AccountPrefixes,
        proc: ProcessEntry,
        status: FileSignature | None,
        counts: bytes | None,
        trusted: bool,
        state: State,
        lines: tuple[str, ...],
    ) -> None:
        self.prefixes = prefixes
        self.proc = proc
        self.status = status
        self.counts = counts
        self.trusted = trusted
        self.state = state
        self.lines = lines

    def still(self, proc: ProcessEntry, status: FileSignature | None, counts: bytes | None) -> bool:
        """Whether these lines are still the account's: same entry, same files."""
        return (
            self.trusted and self.status == status and self.counts == counts and self.proc == proc
        )

    @classmethod
    def read(
        cls,
        name: str,
        proc: ProcessEntry,
        files: AccountDir,
        counts: bytes | None,
        now: float,
        previous: AccountBlock | None,
    ) -> AccountBlock:
        """Reads the account's status file and renders its lines with ``counts`` (its
        metrics.bin's bytes; ``now``: the wall time before the reads, to tell whether the
        status file was written too recently to trust)."""
        prefixes = previous.prefixes if previous is not None else AccountPrefixes(name)
        raw_status, status_signature = _read(files.status)
        status = cast(WorkerStatus, raw_status)
        data = {} if counts is None else statefiles.metrics_of(counts)
        written = status_signature.mtime_ns if status_signature is not None else None
        trusted = written is None or now - written / 1e9 >= RACY_S
        current = account_state(proc, status)
        lines = prefixes.render(proc, status, data, current)
        copied = proc.copy()  # kept
        return cls(prefixes, copied, status_signature, counts, trusted, current, lines)


class AccountPrefixes:
    """An account's sample lines up to their values (``name{account="a",...} ``), made
    once per account: the part of each line that never changes."""

    def __init__(self, name: str) -> None:
        account = (ACCOUNT, name)
        self.states = [sample_prefix(FAMILY_STATE.name, (account, ("state", s))) for s in STATES]
        self.single = {
            family.name: sample_prefix(family.name, (account,))
            for family in (FAMILY_UP, FAMILY_HALTED, FAMILY_PAUSED, FAMILY_RESTARTS,
                           FAMILY_LAST_OK, *GAUGE_FAMILIES.values())
        }  # fmt: skip
        self.counters: dict[str, tuple[dict[tuple[str, ...], int], list[str]]] = {}
        for key, (_text, labels) in COUNTERS.items():
            family, grid = COUNTER_FAMILIES[key], GRID[key]
            zeros = [
                f"{sample_prefix(family.name, (account, *zip(labels, v, strict=True)))}0.0\n"
                for v in grid
            ]
            self.counters[key] = ({v: i for i, v in enumerate(grid)}, zeros)
        self.histograms: dict[str, tuple[list[str], str, str]] = {}  # buckets, count, sum
        for key, family in HISTOGRAM_FAMILIES.items():
            bounds = [*map(str, BUCKETS[key]), "+Inf"]
            buckets = [sample_prefix(f"{family.name}_bucket", (account, ("le", b))) for b in bounds]
            count, total = (
                sample_prefix(f"{family.name}_{end}", (account,)) for end in ("count", "sum")
            )
            self.histograms[key] = (buckets, count, total)

    def render(
        self, proc: ProcessEntry, status: WorkerStatus, data: WorkerMetrics, current: State
    ) -> tuple[str, ...]:
        """The account's lines in each family of :data:`PER_ACCOUNT`, in its order."""
        single = self.single
        states = "".join(
            f"{prefix}{'1.0' if state == current else '0.0'}\n"
            for state, prefix in zip(STATES, self.states, strict=True)
        )
        up = bool(proc.get("pid")) and current in ALIVE | WORKER_STATES
        flags = [
            f"{single[family.name]}{'1.0' if on else '0.0'}\n"
            for family, on in (
                (FAMILY_UP, up),
                (FAMILY_HALTED, current == State.HALTED),
                (FAMILY_PAUSED, current == State.PAUSED),
            )
        ]
        restarts = f"{single[FAMILY_RESTARTS.name]}{number(_number(proc.get('restarts')) or 0)}\n"
        moment = _number(data.get("last_successful_tick"))
        last_ok = "" if moment is None else f"{single[FAMILY_LAST_OK.name]}{number(moment)}\n"
        gauges = []
        for key, family in GAUGE_FAMILIES.items():
            value = _number(status.get(key))
            gauges.append("" if value is None else f"{single[family.name]}{number(value)}\n")
        return (states, *flags, restarts, last_ok, *gauges, *self._counters(data),
                *self._histograms(data))  # fmt: skip

    def _counters(self, data: WorkerMetrics) -> list[str]:
        """Each counter's lines: its whole grid, at 0 where ``data`` counted nothing; a
        label value outside the declared sets is not shown (the worker folds those into
        ``other``)."""
        lines = {key: zeros.copy() for key, (_index, zeros) in self.counters.items()}
        for key, values, value in counted(data):
            index, zeros = self.counters[key]
            at = index.get(values)
            if at is not None:
                prefix = zeros[at][: -len("0.0\n")]
                lines[key][at] = f"{prefix}{number(value)}\n"
        return ["".join(each) for each in lines.values()]

    def _histograms(self, data: WorkerMetrics) -> list[str]:
        """Each histogram's cumulative buckets, count and sum (all 0 until observed)."""
        found = data.get("histograms")
        shown_all = found if isinstance(found, dict) else {}
        out = []
        for key, (buckets, count, total) in self.histograms.items():
            shown = shown_all.get(key)
            shown = shown if isinstance(shown, dict) else {}
            counts = shown.get("counts")
            if (
                not isinstance(counts, list)
                or len(counts) != len(buckets)
                or shown.get("bounds", BUCKETS[key]) not in (BUCKETS[key], list(BUCKETS[key]))
            ):
                counts = [0] * len(buckets)
            running, lines = 0.0, []
            for prefix, each in zip(buckets, counts, strict=True):
                if type(each) is int or type(each) is float:  # not a bool, nor a string
                    running += each
                lines.append(f"{prefix}{number(running)}\n")
            lines.append(f"{count}{number(running)}\n")
            lines.append(f"{total}{number(_number(shown.get('sum')) or 0.0)}\n")
            out.append("".join(lines))
        return out


def counted(data: WorkerMetrics) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """``(counter, label values past account, value)`` for each count in ``data`` (a
    metrics.bin, decoded) of a known counter; a malformed entry is skipped."""
    entries = data.get("counters")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        key, labels = entry.get("name"), entry.get("labels") or {}
        value = _number(entry.get("value"))
        if key not in COUNTERS or value is None or not isinstance(labels, dict):
            continue
        yield key, tuple(str(labels.get(label, "")) for label in COUNTERS[key][1]), value


def account_state(proc: ProcessEntry, status: WorkerStatus) -> State:
    """The supervisor's state, HALTED or PAUSED when its running worker says so (as
    ``status`` shows: :func:`~multirun.core.statefiles.worker_says`)."""
    current = states.parse(proc.get("state"))
    said = statefiles.worker_says(proc, status)
    return states.parse(said, current) if current in ALIVE and said else current


def _read(path: Path) -> tuple[dict[str, Any], FileSignature | None]:
    """The JSON object in ``path`` ({} when missing or unreadable) and the signature of
    the file it was read from, taken before the read: what was read is never older."""
    try:
        with path.open("rb") as file:
            found = os.fstat(file.fileno())
            signature = FileSignature.of(found)
            raw = file.read()
    except OSError:
        return {}, None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        return {}, signature
    return (data if isinstance(data, dict) else {}), signature


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def serve(spec: MetricsSpec, state_dir: Path, ready: Any) -> int:
    """The metrics child: serve ``/metrics`` until SIGTERM; announce its URL once bound."""
    page = StateDirPage(state_dir)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        server, _thread = start_server(spec.host, spec.port, page.render)
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
    server.server_close()
    return 0
