"""``/metrics`` from a real ``multirun start``: two accounts on the simulator, scraped and
parsed with prometheus_client's own parser; its counters agree with the simulator's
ledger and stats; the histograms have their buckets; no secret in the page. And the
``metrics:`` config: loopback by default, a remote address only with ``allow_remote``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from multirun.account.telemetry import BUCKETS, LABEL_VALUES
from multirun.config import loader as config
from multirun.core import procutil
from multirun.core.errors import OrderUncertain
from multirun.core.statedir import StateDir
from multirun.services.metrics import COUNTERS
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


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not on PATH (Debian: apt-get install prometheus)")
    return found


def every_combination_shown(found: list[Any], account: str) -> None:
    """Each counter shows each combination of its labels' declared values for ``account``."""
    for key, (_text, labels) in COUNTERS.items():
        shown = {
            tuple(s.labels[label] for label in labels)
            for s in found
            if s.name == f"multirun_{key}" and s.labels["account"] == account
        }
        assert shown == set(product(*(LABEL_VALUES[label] for label in labels))), key


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
            assert bounds == [*BUCKETS[histogram], float("inf")], histogram
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
    for name in ACCOUNTS:
        every_combination_shown(found, name)
    linted = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
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
    from multirun.account.telemetry import Telemetry
    from multirun.services.metrics import StateDirPage

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
    served = {
        s.name
        for family in text_string_to_metric_families(StateDirPage(tmp_path).render().decode())
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


def scrape(state_dir: Path) -> list[Any]:
    from multirun.services.metrics import StateDirPage

    return samples(StateDirPage(state_dir).render().decode())


def fresh_account(tmp_path: Path, names: list[str]) -> StateDir:
    """A state dir whose accounts' workers have just started: metrics.bin counts nothing."""
    from multirun.account.telemetry import Telemetry

    layout = StateDir(tmp_path)
    accounts = {name: {"state": "RUNNING", "pid": 1, "restarts": 0} for name in names}
    procutil.write_json_atomic(layout.supervisor_json, {"accounts": accounts})
    for name in names:
        layout.account(name).path.mkdir(parents=True, exist_ok=True)
        Telemetry(layout.account(name)).write()
    return layout


def test_every_counter_combination_is_shown_at_zero_from_the_first_scrape(
    tmp_path: Path,
) -> None:
    """So an account's first uncertain order or dropped request moves a series from 0 to 1
    (docs/metrics.md gives the count per account: 153 counter series)."""
    from multirun.account.telemetry import Telemetry

    layout = fresh_account(tmp_path, ["a", "b"])
    first = scrape(tmp_path)
    counters = [s for s in first if s.labels.get("account") == "a" and s.name.endswith("_total")]
    assert len(counters) == 153 and all(s.value == 0 for s in counters)
    # 221 in all (docs/metrics.md) less the seven gauges absent until known: NAV, P&L x2,
    # the day's P&L and drawdown, open trades (no status.json yet), the last good tick's time
    assert len([s for s in first if s.labels.get("account") == "a"]) == 221 - 7
    every_combination_shown(first, "a")
    telemetry = Telemetry(layout.account("a"))
    telemetry.order_sent("BUY", OrderUncertain("open_order: timed out"), 5.0)
    telemetry.request("open_order", "dropped")
    telemetry.request("a_new_endpoint", "1xx")  # outside the declared sets: `other`
    telemetry.write()
    second = scrape(tmp_path)
    assert value(second, "multirun_orders_total", account="a", result="uncertain") == 1
    assert value(second, "multirun_orders_total", account="a", side="buy", result="uncertain") == 1
    assert value(second, "multirun_api_requests_total", account="a", outcome="dropped") == 1
    assert value(second, "multirun_api_requests_total", account="a", endpoint="other") == 1
    assert value(second, "multirun_api_requests_total", account="a", outcome="other") == 1
    assert len(second) == len(first)  # the same series, counted
    every_combination_shown(second, "b")


def documented_rules() -> str:
    """docs/metrics.md's "Alerting rules" YAML block, as it stands."""
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    section = doc.split("## Alerting rules", 1)[1]
    found = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert found, "no yaml block under 'Alerting rules' in docs/metrics.md"
    return found.group(1)


def series(found: list[Any], name: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of one metric in a scrape, in promtool's notation."""
    shown = {}
    for s in found:
        if s.name == name:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            shown[f"{name}{{{labels}}}"] = s.value
    return shown


@pytest.mark.process
def test_the_documented_alerting_rules_fire_under_promtool(tmp_path: Path) -> None:
    """promtool test rules on docs/metrics.md's own block. The orders series come from two
    real scrapes a minute apart, an uncertain order between them: 0 then 1 fires
    MultirunUncertainOrders; the same series born at 1 (as before issue 25) would not."""
    from multirun.account.telemetry import Telemetry

    tool = promtool()
    layout = fresh_account(tmp_path / "state", ["a", "b"])
    before = series(scrape(tmp_path / "state"), "multirun_orders_total")
    telemetry = Telemetry(layout.account("a"))
    telemetry.order_sent("SELL", OrderUncertain("open_order: timed out"), 1.0)
    telemetry.write()
    after = series(scrape(tmp_path / "state"), "multirun_orders_total")
    uncertain = 'multirun_orders_total{account="a",result="uncertain",side="sell"}'
    assert (before[uncertain], after[uncertain]) == (0, 1) and sum(after.values()) == 1
    assert set(before) == set(after)  # every series present at both scrapes
    orders = [{"series": k, "values": f"{before[k]:g} {after[k]:g}"} for k in sorted(after)]
    born = 'multirun_orders_total{account="born",result="uncertain",side="buy"}'
    state = 'multirun_account_state{account="%s",state="FATAL"}'
    lateness = 'multirun_tick_lateness_seconds_bucket{account="%s",le="%s"}'
    tick = 'multirun_last_successful_tick_timestamp_seconds{account="%s"}'
    inputs = [
        *orders,
        {"series": born, "values": "1 1"},  # first seen at 1: increase() is 0
        {"series": tick % "a", "values": "0+60x20"},  # ticking: its last tick is now
        {"series": tick % "stale", "values": "0x20"},  # last good tick at time 0
        {"series": 'multirun_account_halted{account="a"}', "values": "0x20"},
        {"series": 'multirun_account_halted{account="h"}', "values": "0 0 1x18"},
        {"series": state % "a", "values": "0x20"},
        {"series": state % "bad", "values": "1x20"},
        *({"series": lateness % ("a", le), "values": "0+10x20"} for le in ("1", "5", "+Inf")),
        {"series": lateness % ("late", "1"), "values": "0x20"},
        {"series": lateness % ("late", "5"), "values": "0x20"},
        {"series": lateness % ("late", "10"), "values": "0+10x20"},  # all 5 to 10 s late
        {"series": lateness % ("late", "+Inf"), "values": "0+10x20"},
    ]
    expected = {
        ("1m", "MultirunUncertainOrders"): [
            {"account": "a", "side": "sell", "result": "uncertain"}
        ],
        ("15m", "MultirunAccountNotTrading"): [{"account": "stale"}],
        ("1m", "MultirunAccountHalted"): [],
        ("2m", "MultirunAccountHalted"): [{"account": "h"}],
        ("1m", "MultirunAccountFatal"): [{"account": "bad", "state": "FATAL"}],
        ("15m", "MultirunTicksLate"): [{"account": "late"}],
    }
    tests = [
        {
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [
                {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": x} for x in e]}
                for (at, name), e in expected.items()
            ],
        }
    ]
    (tmp_path / "rules.yml").write_text(documented_rules())
    (tmp_path / "test.yml").write_text(json.dumps({"rule_files": ["rules.yml"], "tests": tests}))
    checked = subprocess.run(
        [tool, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert checked.returncode == 0 and "5 rules found" in checked.stdout, checked.stdout
    tested = subprocess.run(
        [tool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
