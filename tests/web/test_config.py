"""``web:`` in runner.yaml: loopback by default, a token (a secret) required elsewhere."""

from __future__ import annotations

from pathlib import Path

from multirun.cli.validate import render
from multirun.config import loader

BASE = """\
version: 1
server: http://127.0.0.1:1
state_dir: ./state
accounts:
  - {name: alpha, user: u, api_key: "${KEY}", accountid: A1, runmode: livetest,
     strategy: random, instrument: BTCUSD, volume: 0.1, interval: 1s}
"""
TOKEN = "a-long-dashboard-token-123"
ENV = {"KEY": "key-123456789", "WEB_TOKEN": TOKEN}


def check(tmp_path: Path, web: str) -> loader.CheckReport:
    path = tmp_path / "runner.yaml"
    path.write_text(BASE + web)
    return loader.validate(path, environ=ENV)


def test_web_is_off_by_default_and_loopback_when_on(tmp_path: Path) -> None:
    assert check(tmp_path, "").spec.web is None  # type: ignore[union-attr]
    spec = check(tmp_path, "web: {read_only: true}\n").spec
    assert spec is not None and spec.web is not None
    assert (spec.web.listen, spec.web.read_only, spec.web.token) == ("127.0.0.1:8700", True, None)


def test_another_address_needs_a_token(tmp_path: Path) -> None:
    report = check(tmp_path, "web: {listen: 0.0.0.0:8700}\n")
    assert not report.ok
    assert "web.token" in render(report) and "web.listen" in render(report)
    spec = check(tmp_path, "web: {listen: 0.0.0.0:8700, token: '${WEB_TOKEN}'}\n").spec
    assert spec is not None and spec.web is not None and spec.web.token is not None
    assert spec.web.token.reveal() == TOKEN and TOKEN not in repr(spec.web)


def test_the_token_is_a_secret_never_quoted(tmp_path: Path) -> None:
    literal = check(tmp_path, f"web: {{token: {TOKEN}}}\n")
    assert "web.token is written in the file" in render(literal)
    short = check(tmp_path, "web: {token: '${WEB_TOKEN}'}\n")
    assert short.ok
    bad = check(tmp_path, "web: {token: 12345}\n")
    assert not bad.ok and "12345" not in render(bad)
