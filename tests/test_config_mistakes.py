"""Mistakes people make in runner.yaml, caught by `validate` (issue 17, cases 9 and 10)."""

from __future__ import annotations

from pathlib import Path

from multirun import config
from multirun.specs import Guardrails

ACCOUNT = """\
  - name: {name}
    user: demo
    api_key: ${{K:-sim-key}}
    accountid: "{name}-id"
    runmode: livetest
    strategy: {strategy}
    instrument: BTCUSD
    volume: {volume}
    interval: 5s
"""


def account(name: str = "alpha", strategy: str = "random", volume: object = 0.1, **extra) -> str:
    text = ACCOUNT.format(name=name, strategy=strategy, volume=volume)
    return text + "".join(f"    {key}: {value}\n" for key, value in extra.items())


def write(tmp_path: Path, *accounts: str, head: str = "server: sim\n") -> Path:
    path = tmp_path / "runner.yaml"
    path.write_text(head + "accounts:\n" + "".join(accounts), encoding="utf-8")
    return path


def lines(report: config.Report) -> list[str]:
    return [str(p) for p in report.problems]


# --- max_volume (case 10) -----------------------------------------------------------


def test_max_volume_refuses_a_volume_typo_at_the_volume(tmp_path: Path) -> None:
    path = write(tmp_path, account(volume=100000, max_volume=1))
    report = config.validate(path, environ={})
    assert lines(report) == [
        f"{path}:10:13: accounts[0].volume: volume 100000 is above max_volume 1 "
        "(accounts[0].max_volume): a typo? raise max_volume if you mean it"
    ]


def test_max_volume_from_defaults_and_in_the_spec(tmp_path: Path) -> None:
    head = "server: sim\ndefaults:\n  max_volume: 0.5\n"
    path = write(tmp_path, account(), account("beta", volume=0.7), head=head)
    report = config.validate(path, environ={})
    assert [p.path for p in report.problems] == ["accounts[1].volume"]
    assert "(defaults.max_volume)" in report.problems[0].message
    path = write(tmp_path, account(), account("beta", max_volume=2), head=head)
    spec = config.load(path, environ={})
    assert [a.guardrails.max_volume for a in spec.accounts] == [0.5, 2.0]


def test_no_max_volume_is_no_limit(tmp_path: Path) -> None:
    spec = config.load(write(tmp_path, account(volume=100000)), environ={})
    assert spec.accounts[0].guardrails == Guardrails() and Guardrails().max_volume is None


def test_max_volume_must_be_positive(tmp_path: Path) -> None:
    report = config.validate(write(tmp_path, account(max_volume=0)), environ={})
    assert [(p.path, p.message) for p in report.problems] == [
        ("accounts[0].max_volume", "must be greater than 0, not 0")
    ]
