"""The page ``/metrics`` serves, rendered by hand (multirun.services.exposition) from
cached per-account lines: byte for byte what ``prometheus_client`` made of the collector
it replaced (frozen below as the reference), never older than the files it reads, and
served as Prometheus asks (OpenMetrics or the text format; gzip, at level 1, only when
asked)."""

from __future__ import annotations

import gzip
import os
import platform
import subprocess
import threading
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

import multirun
from multirun.account.telemetry import BUCKETS, LABEL_VALUES, Telemetry
from multirun.core import procutil, statefiles, states
from multirun.core.errors import OrderRejected, OrderUncertain
from multirun.core.statedir import AccountDir, StateDir
from multirun.core.states import ALIVE, STATES, State
from multirun.services.exposition import GZIP_LEVEL, number, start_server
from multirun.services.metrics import (
    COUNTERS,
    HISTOGRAMS,
    RACY_S,
    STATUS_GAUGES,
    WORKER_STATES,
    StateDirPage,
)
from tests.clocks import ManualClock
from tests.services.test_metrics import promtool

WEIRD = 'we"ird\\na\nme'  # a label value to escape: double quote, backslash, newline


class ReferenceCollector(Collector):
    """The collector ``/metrics`` ran on before the page was rendered by hand (commit
    0560bb9, multirun/services/metrics.py, less its comments): what the page must equal."""

    def __init__(self, state_dir: Path) -> None:
        self.layout = StateDir(state_dir)

    def collect(self) -> Iterator[Metric]:
        accounts = statefiles.supervised(self.layout)
        build = GaugeMetricFamily("multirun_build_info", "multirun's version.",
                                  labels=["version", "python"])  # fmt: skip
        build.add_metric([multirun.__version__, platform.python_version()], 1)
        yield build
        per_state = GaugeMetricFamily("multirun_accounts", "Accounts in each state.",
                                      labels=["state"])  # fmt: skip
        state = GaugeMetricFamily("multirun_account_state", "1 for the account's current state.",
                                  labels=["account", "state"])  # fmt: skip
        up = GaugeMetricFamily("multirun_account_up", "1 while its worker runs.",
                               labels=["account"])  # fmt: skip
        halted = GaugeMetricFamily("multirun_account_halted", "1 when HALTED.", labels=["account"])
        paused = GaugeMetricFamily(
            "multirun_account_paused",
            "1 when PAUSED (no new opens: an operator, a money limit, the trading hours).",
            labels=["account"],
        )
        restarts = CounterMetricFamily("multirun_account_restarts", "Restarts of its worker.",
                                       labels=["account"])  # fmt: skip
        last_ok = GaugeMetricFamily(
            "multirun_last_successful_tick_timestamp_seconds",
            "When the last tick that did not fail ran (Unix time).",
            labels=["account"],
        )
        gauges = {key: GaugeMetricFamily(f"multirun_{name}", text, labels=["account"])
                  for key, (name, text) in STATUS_GAUGES.items()}  # fmt: skip
        counters = {key: CounterMetricFamily(f"multirun_{key}", text, labels=["account", *labels])
                    for key, (text, labels) in COUNTERS.items()}  # fmt: skip
        histograms = {key: HistogramMetricFamily(f"multirun_{key}", text, labels=["account"])
                      for key, text in HISTOGRAMS.items()}  # fmt: skip
        counts = dict.fromkeys(STATES, 0)
        for name, proc in sorted(accounts.items()):
            files = self.layout.account(name)
            status = statefiles.read_worker_status(files)
            current = states.parse(proc.get("state"))
            said = statefiles.worker_says(proc, status)
            current = states.parse(said, current) if current in ALIVE and said else current
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
            data = statefiles.read_metrics(files)
            for (key, *values), value in _counter_rows(data).items():
                counters[key].add_metric([name, *values], value)
            for key, histogram in histograms.items():
                shown = (data.get("histograms") or {}).get(key) or {}
                bounds, found = list(BUCKETS[key]), shown.get("counts")
                if not isinstance(found, list) or len(found) != len(bounds) + 1:
                    found = [0] * (len(bounds) + 1)
                running, buckets = 0.0, []
                for bound, count in zip([*map(str, bounds), "+Inf"], found, strict=True):
                    running += _number(count) or 0
                    buckets.append((bound, running))
                histogram.add_metric([name], buckets, _number(shown.get("sum")) or 0.0)
            moment = _number(data.get("last_successful_tick"))
            if moment is not None:
                last_ok.add_metric([name], moment)
        for each, count in counts.items():
            per_state.add_metric([each], count)
        yield from (per_state, state, up, halted, paused, restarts, last_ok, *gauges.values())
        yield from (*counters.values(), *histograms.values())


def _counter_rows(data: Any) -> dict[tuple[str, ...], float]:
    rows = {(key, *values): 0.0 for key, (_text, labels) in COUNTERS.items()
            for values in product(*(LABEL_VALUES[label] for label in labels))}  # fmt: skip
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


def reference(state_dir: Path, *, openmetrics_format: bool = False) -> bytes:
    registry = CollectorRegistry()
    registry.register(ReferenceCollector(state_dir))
    if openmetrics_format:
        return bytes(openmetrics.generate_latest(registry))
    return generate_latest(registry)


def sample_set(text: str) -> set[tuple[str, frozenset[tuple[str, str]], str]]:
    """Every sample as (name, labels, value as spelled: NaN equals itself)."""
    return {
        (s.name, frozenset(s.labels.items()), floatToGoString(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def varied_state(path: Path) -> StateDir:
    """Accounts in most of the shapes a state directory can hold: trading, PAUSED on its
    pipe, HALTED in its file, FATAL without files, a torn status.json, a metrics.bin whose
    header does not describe its slots, values Go spells oddly, a name whose label needs
    escaping."""
    layout = StateDir(path)
    accounts = {
        "a": {"state": "RUNNING", "pid": 11, "restarts": 2},
        "b": {"state": "RUNNING", "pid": 12, "worker_state": "PAUSED", "restarts": 0},
        "c": {"state": "FATAL", "pid": None, "restarts": 5},
        "d": {"state": "STOPPED", "restarts": True},  # a bool is not a number
        "e": {"state": "RUNNING", "pid": 14},
        WEIRD: {"state": "BACKOFF", "restarts": 1},
    }
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": accounts})
    telemetry = Telemetry(made(layout.account("a")))
    telemetry.count("ticks_total", 1_234_567)  # Go: 1.234567e+06
    telemetry.order_sent("BUY", None, 0.02)
    telemetry.order_sent("SELL", OrderUncertain("open_order: timed out"), 40.0)
    telemetry.order_sent("SELL", OrderRejected("no"), 0.3)
    telemetry.request("open_order", "2xx")
    telemetry.request("a_new_endpoint", "1xx")  # counted as other/other
    telemetry.count("orders_total", side="hold", result="filled")  # outside the grid
    telemetry.observe("tick_lateness_seconds", 0.007)
    telemetry.last_success = 1_796_674_155.061198
    telemetry.write()
    status = {"pid": 11, "state": "RUNNING", "open_trades": 2, "nav": 1e6,
              "realized_pl_today": -223.18, "unrealized_pl": -0.0, "day_pnl": float("nan"),
              "drawdown": 1e21}  # fmt: skip
    procutil.write_json_atomic(layout.account("a").status, status)
    procutil.write_json_atomic(layout.account("e").status, {"pid": 14, "state": "HALTED"})
    layout.account("d").path.mkdir(parents=True)
    layout.account("d").status.write_text('{"pid": 3, "nav": 1')  # torn
    # a metrics file whose header does not describe its slots (one short): nothing counted
    Telemetry(layout.account("d")).write()
    whole = layout.account("d").metrics.read_bytes()
    layout.account("d").metrics.unlink()  # not cut in place: the mapping holds that inode
    layout.account("d").metrics.write_bytes(whole[:-8])
    Telemetry(made(layout.account(WEIRD))).write()
    return layout


def made(account: AccountDir) -> AccountDir:
    """The account's directory, made (a worker's exists before its telemetry starts)."""
    account.path.mkdir(parents=True, exist_ok=True)
    return account


def test_the_page_is_what_prometheus_client_made_of_the_old_collector(tmp_path: Path) -> None:
    varied_state(tmp_path)
    page = StateDirPage(tmp_path)
    text = page.render(False)
    assert text == reference(tmp_path)  # byte for byte: order, spelling, escaping
    assert page.render(True) == reference(tmp_path, openmetrics_format=True)
    assert sample_set(text.decode()) == sample_set(reference(tmp_path).decode())
    assert 'account="we\\"ird\\\\na\\nme"' in text.decode()
    families = {f.name: f for f in openmetrics_families(page.render(True).decode())}
    assert families["multirun_ticks"].type == "counter"  # OpenMetrics' name for it


@pytest.mark.process
def test_promtool_accepts_the_page_of_odd_accounts(tmp_path: Path) -> None:
    varied_state(tmp_path)
    linted = subprocess.run([promtool(), "check", "metrics"], input=StateDirPage(tmp_path).render(),
                            capture_output=True, timeout=30)  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr


def value_of(page: StateDirPage, name: str, account: str = "a") -> float:
    text = page.render().decode()
    found = [s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == name and s.labels.get("account") == account]  # fmt: skip
    assert len(found) == 1, (name, found)
    return float(found[0])


def test_a_change_shows_on_the_next_scrape_and_only_changed_accounts_are_read(
    tmp_path: Path,
) -> None:
    layout = StateDir(tmp_path)
    entries = {name: {"state": "RUNNING", "pid": 1, "restarts": 0} for name in ("a", "b")}
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": entries})
    telemetry = {name: Telemetry(made(layout.account(name))) for name in entries}
    for each in telemetry.values():
        each.count("ticks_total")
        each.write()
    clock = ManualClock(start=os.stat(layout.account("a").metrics).st_mtime + 60)
    page = StateDirPage(tmp_path, clock=clock)
    assert value_of(page, "multirun_ticks_total") == 1 and page.reread == 2
    assert value_of(page, "multirun_ticks_total") == 1 and page.reread == 0  # kept
    telemetry["a"].count("ticks_total")
    telemetry["a"].write()  # the tick's end: copied into the mapped file (its mtime lags)
    clock.advance(60)
    assert value_of(page, "multirun_ticks_total") == 2 and page.reread == 1
    entries["a"]["restarts"] = 3  # supervisor.json only
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": entries})
    assert value_of(page, "multirun_account_restarts_total") == 3 and page.reread == 1
    del entries["b"]
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": entries})
    assert 'account="b"' not in page.render().decode()


def test_a_file_written_too_recently_to_tell_is_read_again(tmp_path: Path) -> None:
    """The same inode, size and mtime, another content (a status.json rewritten within the
    file system's timestamp granularity): read again while the mtime is within RACY_S of
    the scrape, kept once older (no later write can keep that signature)."""
    layout = StateDir(tmp_path)
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": {"a": {"state": "RUNNING"}}})
    path = layout.account("a").status
    path.parent.mkdir(parents=True)
    mtime_ns = 1_800_000_000 * 10**9

    def rewrite_in_place(nav: int) -> None:
        with path.open("r+b") as file:  # same inode, same size
            file.write(f'{{"nav": {nav}}}'.encode())
            file.truncate()
        os.utime(path, ns=(mtime_ns, mtime_ns))

    path.write_bytes(b"")
    rewrite_in_place(1)
    clock = ManualClock(start=mtime_ns / 1e9 + RACY_S / 2)
    page = StateDirPage(tmp_path, clock=clock)
    assert value_of(page, "multirun_nav") == 1
    rewrite_in_place(2)
    assert value_of(page, "multirun_nav") == 2 and page.reread == 1
    clock.advance(RACY_S)
    assert value_of(page, "multirun_nav") == 2 and page.reread == 1  # now trusted
    assert value_of(page, "multirun_nav") == 2 and page.reread == 0  # so kept


def test_the_spelling_of_values_is_prometheus_clients() -> None:
    values = [0.0, -0.0, 1.0, 0.1, 1e6, 999999.0, 1234567.0, 1.796674155061198e9, -5.0, -1e16,
              1e21, 2.5e-7, float("inf"), float("-inf"), float("nan"), 7.0]  # fmt: skip
    for value in values * 2:  # the second time from number()'s memory
        assert number(value) == floatToGoString(value), value


def test_the_server_negotiates_as_prometheus_client_and_gzips_only_when_asked(
    tmp_path: Path,
) -> None:
    varied_state(tmp_path)
    page = StateDirPage(tmp_path)
    failing = threading.Event()

    def render(openmetrics_format: bool) -> bytes:
        if failing.is_set():
            raise RuntimeError("a bug")
        return page.render(openmetrics_format)

    server, thread = start_server("127.0.0.1", 0, render)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=5)
        assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "Content-Encoding" not in plain.headers
        assert plain.content == reference(tmp_path)
        raw = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True).raw
        assert raw.headers["Content-Encoding"] == "gzip"
        body = raw.read(decode_content=False)
        assert body[8] == 4 and GZIP_LEVEL == 1  # XFL 4: compressed at the fastest level
        assert gzip.decompress(body) == plain.content
        prometheus = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                      "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # fmt: skip
        om = requests.get(url, headers={"Accept": prometheus}, timeout=5)
        assert om.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.content == reference(tmp_path, openmetrics_format=True)
        assert om.text.endswith("# EOF\n")
        assert requests.get(url.replace("/metrics", "/favicon.ico"), timeout=5).content == b""
        failing.set()
        assert requests.get(url, timeout=5).status_code == 500
        failing.clear()
        assert requests.get(url, timeout=5).status_code == 200  # still serving
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
