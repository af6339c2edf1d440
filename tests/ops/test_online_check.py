"""`multirun validate --online` against a real simulator (issue 17, case 11): no order sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from multirun.cli.app import app
from multirun.ops import online_check as online

KEY = "alice-online-key-7f3k"
ACCOUNTS = {
    "users": [
        {
            "user": "alice",
            "api_key": KEY,
            "balance": 100000,
            "accounts": {"livetest": ["A-1", "A-2", "A-3"]},
        }
    ]
}


def runner_file(tmp_path: Path, url: str, *entries: str) -> Path:
    path = tmp_path / "runner.yaml"
    body = f"server: {url}\naccounts:\n" + "".join(entries)
    path.write_text(body, encoding="utf-8")
    return path


def entry(name: str, accountid: str = "A-1", instrument: str = "BTCUSD", volume: float = 0.01,
          key: str = "${ONLINE_KEY}", extra: str = "") -> str:  # fmt: skip
    return (
        f"  - name: {name}\n    user: alice\n    api_key: {key}\n    accountid: {accountid}\n"
        f"    runmode: livetest\n    strategy: random\n    instrument: {instrument}\n"
        f"    volume: {volume}\n    interval: 5s\n{extra}"
    )


def invoke(*args: str, key: str = KEY):
    return CliRunner().invoke(app, ["validate", "--online", *args], env={"ONLINE_KEY": key})


def orders_sent(url: str) -> int:
    root = url.rsplit("/rest/v1", 1)[0]
    stats = requests.get(f"{root}/sim/stats", timeout=5).json()["requests"]
    ledger = requests.get(f"{root}/sim/ledger", timeout=5).json()["orders"]
    writes = ("open_order", "close_orders", "cancel_orders", "update_opened_order")
    return len(ledger) + sum(stats.get(w, 0) for w in writes)


def test_online_ok_checks_every_step_and_sends_no_order(sim_factory, tmp_path: Path) -> None:
    sim = sim_factory(accounts=ACCOUNTS)
    path = runner_file(tmp_path, sim.base_url, entry("alpha"), entry("beta", "A-2", "USDJPY", 0.1))
    result = invoke(str(path))
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    assert any(line.split() == ["alpha", "ok", "ok", "ok", "ok", "ok", "ok"] for line in table)
    assert any(line.split() == ["beta", "ok", "ok", "ok", "ok", "ok", "ok"] for line in table)
    assert "no order was sent" in result.output and KEY not in result.output
    assert orders_sent(sim.base_url) == 0


def test_online_failures_exit_1_per_account(sim_factory, tmp_path: Path) -> None:
    sim = sim_factory(accounts=ACCOUNTS)
    path = runner_file(
        tmp_path,
        sim.base_url,
        entry("good"),
        entry("nosuch", "Z-9"),
        entry("instr", "A-2", "NOSUCH1"),
        entry("huge", "A-3", "BTCUSD", 100000),
    )
    result = invoke(str(path), "--json")
    assert result.exit_code == 1, result.output
    assert KEY not in result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    status = {
        a["name"]: {c["check"]: c["status"] for c in a["checks"]}
        for a in report["online"]["accounts"]
    }
    assert set(status["good"].values()) == {"ok"}
    assert status["nosuch"]["login"] == "ok" and status["nosuch"]["account"] == "failed"
    assert status["instr"]["instrument"] == "failed"
    assert status["huge"]["margin"] == "failed"
    assert status["good"]["volume"] == "ok"
    text = invoke(str(path)).output
    assert "nosuch: account: failed: Z-9 (livetest):" in text
    assert "instr: instrument: failed: NOSUCH1: not listed by /list_instrument" in text
    assert "huge: margin: failed: notional" in text and "leverage" in text
    assert orders_sent(sim.base_url) == 0


def test_online_wrong_key_fails_login_once_and_masks_the_key(sim_factory, tmp_path: Path) -> None:
    sim = sim_factory(accounts=ACCOUNTS)
    wrong = "wrong-key-that-is-long-9q"
    path = runner_file(tmp_path, sim.base_url, entry("alpha"))
    result = invoke(str(path), key=wrong)
    assert result.exit_code == 1
    assert "alpha: login: failed: refused" in result.output
    assert wrong not in result.output
    root = sim.base_url.rsplit("/rest/v1", 1)[0]
    stats = requests.get(f"{root}/sim/stats", timeout=5).json()
    assert stats["requests"].get("session") == 1  # a refused key is not retried


@pytest.mark.slow
def test_online_unreachable_server_fails_with_the_cause(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(online, "READ_BUDGET_S", 1.0)
    path = runner_file(tmp_path, "http://127.0.0.1:9/rest/v1", entry("alpha"))
    result = CliRunner().invoke(app, ["validate", "--online", str(path)], env={"ONLINE_KEY": KEY})
    assert result.exit_code == 1
    assert "alpha: login: failed:" in result.output and "connection" in result.output


def test_online_with_server_sim_needs_a_url(tmp_path: Path) -> None:
    path = runner_file(tmp_path, "sim", entry("alpha"))
    result = invoke(str(path))
    assert result.exit_code == 2 and "--server" in result.output
