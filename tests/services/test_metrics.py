"""``/metrics`` from a real ``multirun start``: two accounts on the simulator, scraped and
parsed with prometheus_client's own parser; its counters agree with the simulator's
ledger and stats; the histograms have their buckets; no secret in the page. And the
``metrics:`` config: loopback by default, a remote address only with ``allow_remote``."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from multirun.account.telemetry import LATENCY_BUCKETS
from multirun.config import loader as config
from multirun.core import procutil
from multirun.core.statedir import StateDir
from multirun.sim import SimServer
from tests.conftest import wait_until
from tests.supervisor import test_start_stop as test_supervisor_cli

start = test_supervisor_cli.start  # the fixture, shared

KEY = "metrics-secret-key-5678"
CONFIG = """\
version: 1
server: {server}
state_dir: {state}
stop_timeout: 20
metrics:
  listen: "127.0.0.1:0"
defaults:
  user: alice
  api_key: {key}
  runmode: livetest
  strategy: random
  params:
    seed: 4  # BUY, SELL, BUY: a close every tick from the second
  instrument: BTCUSD
  volume: 1
  interval: 1s
  on_stop: close
accounts:
  - name: met-a
    accountid: MET-A
  - name: met-b
    accountid: MET-B
"""
ACCOUNTS = {"met-a": "MET-A", "met-b": "MET-B"}


def samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def ledger_orders(sim: SimServer) -> dict[str, int]:
    counts = dict.fromkeys(ACCOUNTS.values(), 0)
    for order in sim.ledger():
        counts[str(order["accountid"])] = counts.get(str(order["accountid"]), 0) + 1
    return counts


@pytest.mark.process
def test_scrape_agrees_with_the_ledger(
    sim: SimServer, tmp_path: Path, start: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("UNUSED", "1")
    path = tmp_path / "runner.yaml"
    path.write_text(CONFIG.format(server=sim.base_url, state=tmp_path / "state", key=KEY))
    proc = start(path)
    layout = StateDir(tmp_path / "state")

    def url() -> str | None:
        data = procutil.read_json(layout.supervisor_json) or {}
        return (data.get("announced") or {}).get("metrics")

    metrics_url = wait_until(url, 15)
    page: dict[str, str] = {}

    def agrees() -> bool:
        page["text"] = requests.get(metrics_url, timeout=5).text
        found, ledger = samples(page["text"]), ledger_orders(sim)
        return all(
            ledger[accountid] >= 2
            and value(found, "multirun_orders_total", account=name) == ledger[accountid]
            for name, accountid in ACCOUNTS.items()
        )

    wait_until(agrees, 30, interval=0.2)
    text = page["text"]
    found = samples(text)
    stats = sim.stats()
    assert KEY not in text and "alice" not in text
    assert value(found, "multirun_build_info") == 1
    alive = ("STARTING", "RUNNING")  # STARTING for its first 3 s (startsecs)
    assert sum(value(found, "multirun_accounts", state=state) for state in alive) == 2
    for name in ACCOUNTS:
        assert value(found, "multirun_account_up", account=name) == 1
        assert (
            sum(value(found, "multirun_account_state", account=name, state=s) for s in alive) == 1
        )
        assert value(found, "multirun_account_halted", account=name) == 0
        assert value(found, "multirun_ticks_total", account=name) >= 2
        assert value(found, "multirun_last_successful_tick_timestamp_seconds", account=name) > 0
        for histogram in (
            "tick_lateness_seconds",
            "tick_duration_seconds",
            "order_roundtrip_seconds",
        ):
            buckets = [
                s for s in found
                if s.name == f"multirun_{histogram}_bucket" and s.labels["account"] == name
            ]  # fmt: skip
            bounds = [float(s.labels["le"]) for s in buckets]
            assert bounds == [*LATENCY_BUCKETS, float("inf")], histogram
            counts = [s.value for s in buckets]
            assert counts == sorted(counts) and counts[-1] >= 1
    requests_seen = sum(s.value for s in found if s.name == "multirun_api_requests_total")
    assert 0 < requests_seen <= sum(sim.stats()["requests"].values())
    # the accounts share one user's token (state_dir/.tokens): one fetch may serve both
    assert 1 <= value(found, "multirun_token_renewals_total") <= stats["tokens_issued"]
    assert value(found, "multirun_auth_rejections_total") <= stats["auth_rejections"]

    for s in found:  # bounded labels: account names and small fixed sets
        assert set(s.labels) <= {"account", "state", "side", "result", "endpoint", "outcome",
                                 "le", "version", "python"}  # fmt: skip
    proc.terminate()
    assert proc.wait(timeout=40) == 0


def write(tmp_path: Path, metrics: str) -> Path:
    path = tmp_path / "runner.yaml"
    body = f"""\
        server: sim
        metrics: {metrics}
        accounts:
          - name: a
            user: u
            api_key: ${{KEY}}
            accountid: A
            runmode: livetest
            strategy: random
            instrument: BTCUSD
            volume: 1
            interval: 1m
        """
    path.write_text(textwrap.dedent(body))
    return path


def test_metrics_config(tmp_path: Path) -> None:
    env = {"KEY": "abcd1234"}
    report = config.validate(write(tmp_path, '{listen: "127.0.0.1:9464"}'), environ=env)
    assert report.ok and report.spec is not None and report.spec.metrics is not None
    assert (report.spec.metrics.host, report.spec.metrics.port) == ("127.0.0.1", 9464)
    assert config.validate(write(tmp_path, "{}"), environ=env).problems  # listen is required
    remote = config.validate(write(tmp_path, '{listen: "0.0.0.0:9464"}'), environ=env)
    assert not remote.ok
    assert any("allow_remote" in p.message for p in remote.problems)
    allowed = config.validate(
        write(tmp_path, '{listen: "0.0.0.0:9464", allow_remote: true}'), environ=env
    )
    assert allowed.ok and any("other hosts" in w.message for w in allowed.warnings)
    bad_port = config.validate(write(tmp_path, '{listen: "127.0.0.1:70000"}'), environ=env)
    assert not bad_port.ok
    off = config.validate(write(tmp_path, "null"), environ=env)
    assert not off.ok  # `metrics:` set to nothing is a mistake, not "off"


def test_the_grafana_dashboard_uses_only_metrics_we_serve(tmp_path: Path) -> None:
    """docs/grafana-dashboard.json: one row repeated per account, every query on a metric
    the collector serves (checked against a scrape of a state directory)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from multirun.account.telemetry import Telemetry
    from multirun.services.metrics import StateDirCollector

    layout = StateDir(tmp_path)
    procutil.write_json_atomic(
        layout.supervisor_json, {"accounts": {"a": {"state": "RUNNING", "pid": 1, "restarts": 0}}}
    )
    procutil.write_json_atomic(
        layout.account("a").status,
        {"pid": 1, "state": "RUNNING", "open_trades": 0, "nav": 1.0, "realized_pl_today": 0.0,
         "unrealized_pl": 0.0},
    )  # fmt: skip
    telemetry = Telemetry(layout.account("a"))
    telemetry.count("orders_total", side="buy", result="filled")
    telemetry.request("open_order", "2xx")
    telemetry.last_success = 1.0
    telemetry.write()
    registry = CollectorRegistry()
    registry.register(StateDirCollector(tmp_path))
    served = {
        s.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    board = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "account"} <= variables
    rows = [p for p in board["panels"] if p["type"] == "row" and p.get("repeat") == "account"]
    assert len(rows) == 1
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"multirun_[a-z_]+", expr)}
    assert used and used <= served, used - served


@pytest.mark.process
def test_a_port_in_use_stops_start_with_the_reason(tmp_path: Path) -> None:
    """The metrics server cannot bind: `multirun start` ends at once and says why."""
    import socket

    from tests.supervisor.test_start_stop import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write(tmp_path, f'{{listen: "127.0.0.1:{port}"}}')
        text = path.read_text().replace("${KEY}", "abcd1234")
        path.write_text(f"state_dir: {tmp_path / 'state'}\n{text}")
        result = cli("start", str(path), timeout=30)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in out
    assert "the metrics server exited before it was ready" in out
