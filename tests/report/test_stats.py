"""`multirun report`: every statistic on hand-made journals with known answers."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from multirun import report
from multirun.account.journal.reader import read
from multirun.account.journal.store import Journal
from multirun.core.errors import JournalError, UsageError
from multirun.core.statedir import StateDir
from multirun.report import render
from multirun.report.stats import (
    TOTAL,
    EquityCurve,
    account_stats,
    combined_curve,
    equity_curve,
    max_drawdown,
)

T0 = 1_780_000_000.0
_PRICE_COLUMNS = (
    ("fill_price", "REAL"),
    ("filled_ts", "REAL"),
    ("close_price", "REAL"),
    ("realized_pl", "REAL"),
    ("price_source", "TEXT"),
)


def make_journal(state: Path, name: str, *, prices: bool = True) -> Path:
    """A journal made by the real Journal class, plus (``prices``) the price columns and
    the equity table, whether or not this tree's journal creates them already."""
    account = StateDir(state).account(name)
    account.path.mkdir(parents=True, exist_ok=True)
    Journal(account.journal, f"mr-{name}-").close()
    db = sqlite3.connect(account.journal)
    if prices:
        have = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
        for column, kind in _PRICE_COLUMNS:
            if column not in have:
                db.execute(f"ALTER TABLE orders ADD COLUMN {column} {kind}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS equity (ts REAL NOT NULL, nav REAL,"
            " realized_pl REAL, unrealized_pl REAL)"
        )
    db.commit()
    db.close()
    return account.journal


def add_order(
    path: Path,
    ref: str,
    *,
    state: str = "CLOSED",
    side: str = "BUY",
    volume: float = 1.0,
    created: float = T0,
    opened: float | None = None,
    closed: float | None = None,
    pl: float | None = None,
    source: str | None = "history",
) -> None:
    db = sqlite3.connect(path)
    columns = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
    row = {
        "order_ref": ref, "instrument": "BTCUSD", "side": side, "volume": volume,
        "state": state, "trade_id": ref, "created_ts": created, "acked_ts": opened,
        "closed_ts": closed,
    }  # fmt: skip
    if "realized_pl" in columns:
        row |= {"filled_ts": opened, "fill_price": 100.0, "realized_pl": pl,
                "price_source": source, "close_price": 101.0 if closed else None}  # fmt: skip
    names = ", ".join(row)
    db.execute(f"INSERT INTO orders ({names}) VALUES ({', '.join('?' * len(row))})",
               list(row.values()))  # fmt: skip
    db.commit()
    db.close()


def add_equity(path: Path, points: Sequence[tuple[float, ...]]) -> None:
    """Equity samples: (ts, nav) with no unrealized P&L, or (ts, nav, unrealized)."""
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO equity (ts, nav, realized_pl, unrealized_pl) VALUES (?, ?, 0, ?)",
        [(p[0], p[1], p[2] if len(p) > 2 else 0.0) for p in points],
    )
    db.commit()
    db.close()


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Four closed trades (+30, -10, +20, -5), one open, one abandoned intent."""
    path = make_journal(tmp_path, "alpha")
    for i, pl in enumerate((30.0, -10.0, 20.0, -5.0)):
        start = T0 + i * 100
        add_order(path, f"r{i}", opened=start + 1, closed=start + 61, created=start, pl=pl)
    add_order(path, "open", state="OPEN", volume=0.5, created=T0 + 500, opened=T0 + 501)
    add_order(path, "gone", state="ABANDONED", created=T0 + 600)
    return tmp_path


def test_win_rate_profit_factor_expectancy_best_worst_hold(mixed: Path) -> None:
    stats = account_stats(read(StateDir(mixed).account("alpha").journal, "alpha"))
    assert stats.orders == 6
    assert stats.trades_closed == 4 and stats.priced == 4
    assert stats.win_rate == pytest.approx(0.5)
    assert stats.realized_pl == pytest.approx(35.0)
    assert stats.profit_factor == pytest.approx(50.0 / 15.0)
    assert stats.expectancy == pytest.approx(35.0 / 4)
    assert (stats.best_trade, stats.worst_trade) == (30.0, -10.0)
    assert stats.avg_hold_s == pytest.approx(60.0)
    assert (stats.open_count, stats.open_volume) == (1, 0.5)
    # no equity samples: drawdown of the realized curve 0, 30, 20, 40, 35
    assert (stats.max_drawdown, stats.drawdown_source) == (10.0, "realized")
    assert stats.first_ts == T0 and stats.last_ts == T0 + 600


def test_max_drawdown_known_answers() -> None:
    assert max_drawdown([]) is None
    assert max_drawdown([5.0, 6.0, 7.0]) == 0.0
    assert max_drawdown([100.0, 120.0, 90.0, 130.0, 100.0, 125.0]) == 30.0
    assert max_drawdown([0.0, -20.0, 10.0]) == 20.0


def test_equity_curve_starts_before_the_first_fill(tmp_path: Path) -> None:
    """Issue 25: the first sample, after the fill, already shows the spread; the curve
    and MAX DD start at 0 before the order, and the curve ends at the table's figures."""
    path = make_journal(tmp_path, "spread")
    add_order(path, "a", created=T0, opened=T0 + 1, closed=T0 + 60, pl=-14.77)
    add_equity(path, [(T0 + 2, 999_985.61, -14.39), (T0 + 61, 999_985.23, 0.0)])
    log = read(path, "spread")
    assert equity_curve(log).points == (
        (T0, 0.0), (T0 + 2, -14.39), (T0 + 60, -14.77), (T0 + 61, -14.77),
    )  # fmt: skip
    stats = account_stats(log)
    assert (stats.max_drawdown, stats.drawdown_source) == (pytest.approx(14.77), "equity")
    assert stats.realized_pl == -14.77 and stats.unrealized_pl == 0.0
    assert stats.nav == 999_985.23


def test_a_close_that_leaves_a_trade_held_keeps_the_equity(tmp_path: Path) -> None:
    path = make_journal(tmp_path, "two")
    add_order(path, "a", created=T0, opened=T0 + 1, closed=T0 + 50, pl=-5.0)
    add_order(path, "b", state="OPEN", created=T0 + 9, opened=T0 + 10)
    add_equity(path, [(T0 + 20, 1000.0, -8.0), (T0 + 60, 1000.0, -2.0)])
    curve = equity_curve(read(path, "two"))
    # at the close: realized -5, the unrealized taken as -3 (the equity unchanged)
    assert curve.points == ((T0, 0.0), (T0 + 20, -8.0), (T0 + 50, -8.0), (T0 + 60, -7.0))
    assert curve.unrealized == -2.0
    stats = account_stats(read(path, "two"))
    assert stats.max_drawdown == 8.0 and stats.unrealized_pl == -2.0


def test_since_starts_at_the_unrealized_already_held(tmp_path: Path) -> None:
    path = make_journal(tmp_path, "held")
    add_order(path, "a", created=T0, opened=T0 + 1, closed=T0 + 300, pl=-12.0)
    add_equity(path, [(T0 + 100, 1000.0, -4.0), (T0 + 250, 1000.0, -9.0)])
    curve = equity_curve(read(path, "held"), since=T0 + 200)
    # the period counts the trade closed in it whole (as REALIZED does), from -4
    assert curve.points == ((T0 + 250, -4.0), (T0 + 250, -9.0), (T0 + 300, -12.0))


def test_combined_curve_sums_each_account_carried_forward() -> None:
    a = EquityCurve(((1.0, 0.0), (3.0, -10.0)), 0.0, "equity")
    b = EquityCurve(((2.0, 0.0), (4.0, 20.0)), None, "realized")
    total = combined_curve([a, b, EquityCurve((), None, None)])
    # b counts at its first value before it starts
    assert [v for _, v in total.points] == [0.0, 0.0, 0.0, -10.0, 10.0]
    # a first close at the start's very time: the sum still starts at the starts' values
    c = EquityCurve(((1.0, 0.0), (1.0, -7.0)), 0.0, "equity")
    assert combined_curve([c, b]).points[:2] == ((1.0, 0.0), (1.0, -7.0))
    assert (total.unrealized, total.source) == (0.0, "realized")


def test_empty_journal(tmp_path: Path) -> None:
    make_journal(tmp_path, "empty")
    built = report.build(tmp_path)
    stats = built.rows[0]
    assert stats.orders == stats.trades_closed == stats.open_count == 0
    assert stats.win_rate is stats.realized_pl is stats.profit_factor is None
    assert stats.max_drawdown is stats.avg_hold_s is stats.first_ts is None
    assert "period: nothing journaled" in render.table(built.rows)


def test_open_only_journal(tmp_path: Path) -> None:
    path = make_journal(tmp_path, "holder")
    add_order(path, "a", state="OPEN", volume=0.01, opened=T0 + 1)
    add_order(path, "b", state="CLOSING", side="SELL", volume=0.02, opened=T0 + 2, created=T0 + 2)
    stats = account_stats(read(path, "holder"))
    assert (stats.orders, stats.trades_closed, stats.open_count) == (2, 0, 2)
    assert stats.open_volume == pytest.approx(0.03)
    assert stats.win_rate is None and stats.max_drawdown is None and stats.avg_hold_s is None


def test_journal_with_only_the_old_tables_reads(tmp_path: Path) -> None:
    """A journal of the schema before prices (hand-made: no price column, no equity)."""
    account = StateDir(tmp_path).account("legacy")
    account.path.mkdir()
    db = sqlite3.connect(account.journal)
    db.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, order_ref TEXT, instrument TEXT,"
        " side TEXT, volume REAL, state TEXT, trade_id TEXT, created_ts REAL, acked_ts REAL,"
        " closed_ts REAL)"
    )
    db.execute("INSERT INTO orders VALUES (1, 'a', 'BTCUSD', 'BUY', 1, 'CLOSED', '7', ?, ?, ?)",
               (T0, T0 + 1, T0 + 11))  # fmt: skip
    db.commit()
    db.close()
    log = read(account.journal, "legacy")
    assert not log.has_prices and log.equity == ()
    stats = account_stats(log)
    assert stats.trades_closed == 1 and stats.realized_pl is None and stats.avg_hold_s == 10.0
    assert stats.priced == 0 and stats.win_rate is None and stats.max_drawdown is None
    built = report.build(tmp_path)
    assert any("legacy: journal written before prices were kept" in n for n in built.notes)


def test_read_is_read_only_and_needs_no_lock(mixed: Path) -> None:
    account = StateDir(mixed).account("alpha")
    journal = Journal.for_account(account, "mr-alpha-")  # the worker holds the lock
    try:
        before = account.journal.stat().st_mtime_ns
        assert len(read(account.journal, "alpha").trades) == 6
        assert account.journal.stat().st_mtime_ns == before
    finally:
        journal.close()


def test_missing_journal_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        read(tmp_path / "nope" / "journal.sqlite", "nope")
    with pytest.raises(UsageError, match="no journal for ghost"):
        report.build(tmp_path, wanted=["ghost"])


def test_since_filters_orders_closes_and_equity(mixed: Path) -> None:
    path = StateDir(mixed).account("alpha").journal
    add_equity(path, [(T0, 1000.0), (T0 + 150, 900.0), (T0 + 250, 950.0)])
    built = report.build(mixed, since=T0 + 200)
    stats = built.rows[0]
    assert stats.orders == 4  # r2, r3, open, gone
    assert stats.trades_closed == 2 and stats.realized_pl == pytest.approx(15.0)
    assert stats.open_count == 1
    assert stats.max_drawdown == 5.0  # from the period's start: 0, 0, +20, +15
    assert report.parse_since("2026-05-28") == pytest.approx(1_779_926_400.0)
    assert report.parse_since("2026-05-28T01:00+01:00") == pytest.approx(1_779_926_400.0)
    with pytest.raises(UsageError):
        report.parse_since("yesterday")


def test_total_sums_accounts_and_combines_drawdown(mixed: Path) -> None:
    beta = make_journal(mixed, "beta")
    add_order(beta, "b1", opened=T0 + 5, closed=T0 + 905, pl=-40.0)
    add_equity(StateDir(mixed).account("alpha").journal, [(T0, 1000.0), (T0 + 20, 1100.0)])
    add_equity(beta, [(T0 + 10, 500.0, -20.0), (T0 + 30, 420.0, -100.0)])
    built = report.build(mixed, configured=["beta", "alpha"])
    assert [r.name for r in built.rows] == ["beta", "alpha", TOTAL]
    total = built.rows[-1]
    assert total.trades_closed == 5 and total.realized_pl == pytest.approx(-5.0)
    assert total.win_rate == pytest.approx(2 / 5)
    assert total.profit_factor == pytest.approx(50.0 / 55.0)
    # alpha 0, 0, 0, 0, +30, +20, +40, +35, +35; beta 0, -20, -20, -100, ..., -40:
    # summed 0, -20, -20, -100, -70, -80, -60, -65, -5 -> drawdown 100
    assert (total.max_drawdown, total.drawdown_source) == (100.0, "equity")
    assert total.nav == 1520.0 and total.unrealized_pl == 0.0


def test_quote_priced_trades_are_noted(tmp_path: Path) -> None:
    path = make_journal(tmp_path, "q")
    add_order(path, "a", opened=T0, closed=T0 + 5, pl=1.0, source="quote")
    assert any("last quote seen" in n for n in report.build(tmp_path).notes)


def test_json_csv_and_table_outputs(mixed: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "r.csv"
    assert report.run(mixed, json_output=True, csv_path=out, echo=lines.append) == 0
    document = json.loads(lines[0])
    assert [a["name"] for a in document["accounts"]] == ["alpha"]
    assert document["total"]["win_rate"] == 0.5 and document["total"]["profit_factor"] > 3
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["name"] for r in rows] == ["alpha", TOTAL]
    assert float(rows[0]["realized_pl"]) == 35.0
    lines.clear()
    report.run(mixed, echo=lines.append)
    text = lines[0]
    assert "WIN%" in text and "50%" in text and "+35.00" in text and "1m00s" in text


def test_profit_factor_with_no_loss_shows_inf(tmp_path: Path) -> None:
    path = make_journal(tmp_path, "lucky")
    add_order(path, "a", opened=T0, closed=T0 + 5, pl=2.0)
    rows = report.build(tmp_path).rows
    assert rows[0].profit_factor is None and render.cell(rows[0], "profit_factor", "f") == "inf"


def test_cli_reads_the_config_state_dir_and_names(mixed: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from multirun.cli.app import app

    config = tmp_path / "runner.yaml"
    text = (Path(__file__).parents[2] / "runner.yaml.example").read_text()
    config.write_text(text.replace("state_dir: .multirun", f"state_dir: {mixed}"))
    beta = make_journal(mixed, "coin-btc")
    add_order(beta, "c1", opened=T0, closed=T0 + 10, pl=-1.0)
    runner = CliRunner()
    done = runner.invoke(app, ["report", str(config), "--json"])
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    # configured accounts first, then the journal not in the runner file (noted)
    assert [a["name"] for a in document["accounts"]] == ["coin-btc", "alpha"]
    assert any("alpha: not in the runner file" in n for n in document["notes"])
    done = runner.invoke(
        app, ["report", "--state-dir", str(mixed), "alpha", "--since", "2026-01-01"]
    )
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[1].startswith("alpha")
    done = runner.invoke(app, ["report", "--state-dir", str(mixed), "ghost"])
    assert done.exit_code == 2 and "no journal for ghost" in done.output


MONEY_KEYS = frozenset((
    "realized_pl", "gross_profit", "gross_loss", "expectancy", "best_trade", "worst_trade",
    "max_drawdown", "nav", "unrealized_pl",
))  # fmt: skip


class Number(str):
    """A JSON number's text, as written (``json.loads(parse_float=Number)``)."""


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text and "e" not in text.lower() else 0


def assert_no_raw_float(json_text: str, csv_text: str, price_places: dict[str, int]) -> None:
    """Money at most 2 decimals (the account currency's, unknown: the cent), a price at
    most its instrument's, anything else at most 4: no ``-14.769999999999998``."""
    document = json.loads(json_text, parse_float=Number)
    rows = [*document["accounts"], document["total"]]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, Number):
                assert decimals(value) <= (2 if key in MONEY_KEYS else 4), (key, value)
    for trade in document["trades"]:
        places = price_places[trade["instrument"]]
        for key in ("open_price", "close_price"):
            value = trade[key]
            assert value is None or decimals(value) <= places, (trade["instrument"], value)
        assert trade["realized_pl"] is None or decimals(trade["realized_pl"]) <= 2, trade
    for row in csv.DictReader(io.StringIO(csv_text)):
        for key, value in row.items():
            assert decimals(value) <= (2 if key in MONEY_KEYS else 4), (key, value)


def test_csv_and_json_hold_no_raw_float(tmp_path: Path) -> None:
    path = make_journal(tmp_path, "noisy")
    add_order(path, "a", opened=T0 + 1, closed=T0 + 7, pl=-14.769999999999998)
    add_order(path, "b", opened=T0 + 9, closed=T0 + 20, pl=0.1 + 0.2)
    add_order(path, "c", opened=T0 + 21, closed=T0 + 22.123456, pl=1 / 3)
    add_equity(path, [(T0 + 5.55555, 999_985.2300000001, -14.390000000000001)])
    db = sqlite3.connect(path)
    db.execute("UPDATE orders SET instrument = 'EURUSD', fill_price = 1.0779700000000001,"
               " close_price = 1.07787 WHERE order_ref = 'b'")  # fmt: skip
    db.execute("UPDATE orders SET fill_price = 29122.180000000004 WHERE order_ref = 'a'")
    db.commit()
    db.close()
    lines: list[str] = []
    out = tmp_path / "r.csv"
    report.run(tmp_path, json_output=True, csv_path=out, echo=lines.append)
    assert "-14.769999999999998" not in lines[0] + out.read_text()
    assert_no_raw_float(lines[0], out.read_text(), {"BTCUSD": 2, "EURUSD": 5})
    trades = json.loads(lines[0])["trades"]
    assert [(t["order_ref"], t["open_price"], t["realized_pl"]) for t in trades] == [
        ("a", 29122.18, -14.77), ("b", 1.07797, 0.3), ("c", 100.0, 0.33),
    ]  # fmt: skip
    assert render.price_decimals(read(path, "noisy").trades) == {"BTCUSD": 2, "EURUSD": 5}
