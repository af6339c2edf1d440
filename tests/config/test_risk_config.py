"""runner.yaml's money limits and trading hours: parsed into specs, checked all at once,
and diffed by a reload."""

from __future__ import annotations

from pathlib import Path

from multirun.config import loader as config
from multirun.config.reload_diff import plan
from multirun.config.specs import DayStart, RiskSpec, TradingHours, parse_days

ACCOUNT = """\
  - name: {name}
    user: demo
    api_key: ${{K:-sim-key}}
    accountid: "{name}-id"
    runmode: livetest
    strategy: random
    instrument: BTCUSD
    volume: 0.1
    interval: 5s
{extra}"""


def write(tmp_path: Path, top: str, *accounts: str, name: str = "runner.yaml") -> Path:
    body = "server: sim\n" + top + "accounts:\n" + "".join(accounts)
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def account(name: str, extra: str = "") -> str:
    return ACCOUNT.format(name=name, extra=extra)


def test_limits_and_hours_load_into_specs(tmp_path: Path) -> None:
    top = (
        "risk:\n  max_daily_loss: 1500\n  max_drawdown: 3000\n  on_breach: flatten\n"
        "  day_starts: 17:00 America/New_York\n"
    )
    coin = (
        "    risk: {max_daily_loss: 300, max_drawdown: 600, on_breach: pause}\n"
        '    trading_hours: {days: mon-fri, from: "08:00", to: "16:30", tz: Europe/London,'
        " flatten_at_end: true}\n"
    )
    night = '    trading_hours: {days: "sun-thu", from: "22:00", to: "06:00", overnight: true}\n'
    spec = config.load(
        write(tmp_path, top, account("coin", coin), account("night", night), account("plain"))
    )
    assert spec.risk == RiskSpec(1500.0, 3000.0, "flatten", DayStart(17 * 60, "America/New_York"))
    assert spec.day_starts == DayStart(1020, "America/New_York")
    coin_spec, night_spec, plain = spec.accounts
    assert coin_spec.risk == RiskSpec(300.0, 600.0, "pause")
    assert coin_spec.trading_hours == TradingHours(
        frozenset(range(5)), 8 * 60, 16 * 60 + 30, "Europe/London", flatten_at_end=True
    )
    assert night_spec.risk is None
    assert night_spec.trading_hours == TradingHours(
        frozenset({6, 0, 1, 2, 3}), 22 * 60, 6 * 60, "UTC", overnight=True
    )
    assert plain.risk is None and plain.trading_hours is None
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})  # a range may wrap


def test_every_problem_is_reported_at_its_place(tmp_path: Path) -> None:
    top = "risk:\n  max_daily_loss: -5\n  day_starts: 00:00 Mars/Base\n"
    bad = (
        "    risk: {max_drawdown: 0, on_breach: stop}\n"
        '    trading_hours: {days: mon-fry, from: 16:30, to: "08:00", tz: Europe/Londres}\n'
    )
    overnight = '    trading_hours: {from: "22:00", to: "06:00"}\n'
    wrong_way = '    trading_hours: {from: "08:00", to: "16:00", overnight: true}\n'
    report = config.validate(
        write(tmp_path, top, account("a", bad), account("b", overnight), account("c", wrong_way))
    )
    found = {(p.line, p.path): p.message for p in report.problems}
    assert report.spec is None and len(found) == 9, found
    assert found[(3, "risk.max_daily_loss")].startswith("must be greater than 0")
    assert "unknown time zone 'Mars/Base'" in found[(4, "risk.day_starts")]
    assert found[(15, "accounts[0].risk.max_drawdown")].startswith("must be greater than 0")
    assert "pause, flatten" in found[(15, "accounts[0].risk.on_breach")]
    assert "'fry' is not a day" in found[(16, "accounts[0].trading_hours.days")]
    assert 'quote the time ("16:30")' in found[(16, "accounts[0].trading_hours.from")]
    assert "unknown time zone" in found[(16, "accounts[0].trading_hours.tz")]
    assert "add `overnight: true`" in found[(26, "accounts[1].trading_hours.to")]
    assert "ends the same day" in found[(36, "accounts[2].trading_hours.overnight")]


def test_reload_lists_changed_limits(tmp_path: Path) -> None:
    before = config.load(
        write(tmp_path, "", account("a", "    risk: {max_daily_loss: 300}\n"), account("b"))
    )
    after = config.load(
        write(
            tmp_path,
            "risk:\n  max_drawdown: 900\n  day_starts: 08:00 UTC\n",
            account("a", "    risk: {max_daily_loss: 250}\n"),
            account("b", '    trading_hours: {from: "08:00", to: "24:00"}\n'),
            name="edited.yaml",
        )
    )
    diff = plan(before, after)
    assert diff.ok
    assert diff.changed["a"] == (
        "risk: max_daily_loss 300, on_breach pause -> max_daily_loss 250, on_breach pause",
        "risk.day_starts: 00:00 UTC -> 08:00 UTC",
    )
    assert diff.changed["b"] == (
        "trading_hours: null -> mon,tue,wed,thu,fri,sat,sun 08:00-24:00 UTC",
        "risk.day_starts: 00:00 UTC -> 08:00 UTC",
    )
    assert diff.settings == ("risk: null -> max_drawdown 900, on_breach pause",)
