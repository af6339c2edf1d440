"""reload.plan: the diff of a running runner.yaml and its edit, by effective account spec."""

from __future__ import annotations

import json
from pathlib import Path

from multirun.config import loader as config
from multirun.config.reload_diff import plan

SECRET_OLD = "old-secret-key-value-1234"
SECRET_NEW = "new-secret-key-value-5678"


def load(tmp_path: Path, text: str, name: str = "runner.yaml") -> config.RunnerSpec:
    path = tmp_path / name
    path.write_text(text)
    return config.load(path, environ={})


def account(name: str, extra: str = "", key: str = SECRET_OLD) -> str:
    return (
        f"  - name: {name}\n    user: u\n    api_key: {key}\n    accountid: '{name}1'\n"
        f"    instrument: BTCUSD\n    strategy: random\n{extra}"
    )


HEAD = "version: 1\nserver: sim\nstate_dir: ./state\n"
DEFAULTS = "defaults:\n  runmode: livetest\n  volume: 0.01\n  interval: 1m\n"


def test_added_removed_changed_unchanged(tmp_path: Path) -> None:
    abc = account("a") + account("b") + account("c")
    old = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + abc)
    new = load(
        tmp_path,
        HEAD + DEFAULTS + "accounts:\n" + account("a") + account("c", "    volume: 0.02\n")
        + account("d"),
    )  # fmt: skip
    result = plan(old, new)
    assert (result.added, result.removed, result.unchanged) == (("d",), ("b",), ("a",))
    assert dict(result.changed) == {"c": ("volume: 0.01 -> 0.02",)}
    assert result.ok and not result.is_empty
    assert result.lines() == [
        "+ d: added: started, holding nothing yet",
        "- b: removed: stopped, holding nothing",
        "~ c: volume 0.01 -> 0.02: restarted, holding nothing",
        "= a: unchanged: same process, its positions untouched",
    ]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["changed"] == {"c": ["volume: 0.01 -> 0.02"]} and data["refused"] == []


def test_effective_spec_moving_a_value_into_defaults_changes_nothing(tmp_path: Path) -> None:
    old = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + account("a", "    interval: 5m\n"))
    new = load(tmp_path, HEAD + DEFAULTS.replace("1m", "5m") + "accounts:\n" + account("a"))
    assert plan(old, new).unchanged == ("a",) and plan(old, new).is_empty


def test_a_default_change_changes_every_account_inheriting_it(tmp_path: Path) -> None:
    body = "accounts:\n" + account("a") + account("b", "    interval: 1h\n")
    old = load(tmp_path, HEAD + DEFAULTS + body)
    new = load(tmp_path, HEAD + DEFAULTS.replace("1m", "30s") + body)
    result = plan(old, new)
    assert dict(result.changed) == {"a": ("interval: 1m -> 30s",)}
    assert result.unchanged == ("b",)


def test_variables_are_compared_after_interpolation(tmp_path: Path) -> None:
    text = HEAD + DEFAULTS + "accounts:\n" + account("a", "    volume: ${VOL}\n")
    (tmp_path / "runner.yaml").write_text(text)
    old = config.load(tmp_path / "runner.yaml", environ={"VOL": "0.01"})
    same = config.load(tmp_path / "runner.yaml", environ={"VOL": "0.01"})
    new = config.load(tmp_path / "runner.yaml", environ={"VOL": "0.5"})
    assert plan(old, same).unchanged == ("a",)
    assert dict(plan(old, new).changed) == {"a": ("volume: 0.01 -> 0.5",)}


def test_secrets_are_compared_but_never_shown(tmp_path: Path) -> None:
    old = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + account("a"))
    new = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + account("a", key=SECRET_NEW))
    result = plan(old, new)
    assert dict(result.changed) == {"a": ("api_key: changed",)}
    assert result.lines() == ["~ a: api_key changed: restarted, holding nothing"]
    shown = "\n".join(result.lines()) + json.dumps(result.to_dict())
    assert SECRET_OLD not in shown and SECRET_NEW not in shown


def test_params_guardrails_and_enabled_are_listed(tmp_path: Path) -> None:
    old = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + account("a"))
    extra = "    enabled: false\n    max_open_trades: 3\n    on_stop: keep\n"
    new = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + account("a", extra))
    changes = dict(plan(old, new).changed)["a"]
    assert "enabled: true -> false" in changes and "on_stop: close -> keep" in changes
    assert any(c.startswith("max_open_trades: ") and c.endswith(" -> 3") for c in changes)


def test_settings_that_cannot_apply_live_are_refused(tmp_path: Path) -> None:
    body = DEFAULTS + "accounts:\n" + account("a")
    old = load(tmp_path, HEAD + body)
    new = load(tmp_path, HEAD.replace("./state", "./other").replace("sim", "http://h:1") + body)
    result = plan(old, new)
    assert not result.ok and len(result.refused) == 2
    assert all("full restart is needed" in line for line in result.refused)
    assert result.refused[0].startswith("state_dir: ") and result.refused[1].startswith("server: ")
    assert result.lines()[0].startswith("! state_dir: ")
    assert result.to_dict()["ok"] is False


def test_a_changed_metrics_listen_is_refused(tmp_path: Path) -> None:
    body = DEFAULTS + "accounts:\n" + account("a")
    old = load(tmp_path, HEAD + body)
    new = load(tmp_path, HEAD + 'metrics: {listen: "127.0.0.1:9464"}\n' + body)
    result = plan(old, new)
    assert not result.ok and result.refused[0].startswith("metrics: ")
    assert "full restart is needed" in result.refused[0]


def test_supervisor_settings_apply_live(tmp_path: Path) -> None:
    body = DEFAULTS + "accounts:\n" + account("a")
    old = load(tmp_path, HEAD + body)
    new = load(tmp_path, HEAD + "stop_timeout: 90\n" + body)
    result = plan(old, new)
    assert result.ok and result.unchanged == ("a",) and not result.is_empty
    assert len(result.settings) == 1 and result.settings[0].startswith("stop_timeout: ")
    assert result.lines()[-1].startswith("~ (supervisor) stop_timeout: ")


def test_a_binding_change_of_an_account_holding_trades_is_refused_naming_them(
    tmp_path: Path,
) -> None:
    old = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + account("a") + account("b"))
    edited = account("a").replace("'a1'", "'a9'") + account("b").replace("'b1'", "'b9'")
    new = load(tmp_path, HEAD + DEFAULTS + "accounts:\n" + edited)
    held = {"a": ("trade 7 BUY 1 BTCUSD (mr-a-X-1)",)}
    result = plan(old, new, lambda name: held.get(name, ()))
    assert not result.ok
    assert len(result.refused) == 1  # b holds nothing: its binding may change
    line = result.refused[0]
    assert line.startswith("a: accountid a1 -> a9 cannot apply"), line
    assert "trade 7 BUY 1 BTCUSD (mr-a-X-1)" in line and "multirun close" in line
    assert plan(old, new).ok  # nothing held: a plain change
