"""Rendering a report: the terminal table, JSON, CSV, and the self-contained HTML page.

Numbers in the CSV and JSON text are rounded, never raw floats: money (P&L, NAV,
drawdown) to :data:`MONEY_DECIMALS`, prices to their instrument's decimals
(:func:`price_decimals`), ratios to 4 decimals, seconds to the millisecond.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from multirun.account.journal.reader import JournalTrade
from multirun.core.clock import iso_ms, iso_s, utc
from multirun.report.stats import TOTAL, Stats

# The account currency's decimals. The API names the currency (``BaseCurrency``) but not
# its precision; 2 (the cent) is what the simulator rounds balances and P&L to.
MONEY_DECIMALS = 2
PRICE_DECIMALS_MAX = 8
MONEY_FIELDS = ("realized_pl", "gross_profit", "gross_loss", "expectancy", "best_trade",
          "worst_trade", "max_drawdown", "nav", "unrealized_pl")  # fmt: skip
_DECIMALS: dict[str, int] = {key: MONEY_DECIMALS for key in MONEY_FIELDS} | {
    "win_rate": 4, "profit_factor": 4, "avg_hold_s": 3, "first_ts": 3, "last_ts": 3,
    "open_volume": 8,
}  # fmt: skip
AccountTrade = tuple[str, JournalTrade]  # (account name, trade)

# (header, key, format) of the table's columns; the HTML table uses the same.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ACCOUNT", "name", "text"),
    ("ORDERS", "orders", "int"),
    ("CLOSED", "trades_closed", "int"),
    ("WIN%", "win_rate", "pct"),
    ("REALIZED", "realized_pl", "money"),
    ("PF", "profit_factor", "factor"),
    ("EXPECT", "expectancy", "money"),
    ("BEST", "best_trade", "money"),
    ("WORST", "worst_trade", "money"),
    ("MAX DD", "max_drawdown", "amount"),
    ("AVG HOLD", "avg_hold_s", "duration"),
    ("OPEN", "open_count", "int"),
    ("OPEN VOL", "open_volume", "volume"),
    ("UNREAL", "unrealized_pl", "money"),
)


def cell(row: Stats, key: str, kind: str) -> str:
    """One value as the table shows it; ``-`` where unknown."""
    value = getattr(row, key)
    if key == "profit_factor" and value is None and row.gross_profit > 0:
        return "inf"  # profits and no loss
    if value is None:
        return "-"
    if kind == "int":
        return str(value)
    if kind == "pct":
        return f"{value * 100:.0f}%"
    if kind == "money":
        return f"{value:+,.2f}"
    if kind == "amount":
        return f"{value:,.2f}"
    if kind == "factor":
        return f"{value:.2f}"
    if kind == "volume":
        return f"{value:g}"
    if kind == "duration":
        return duration(value)
    return str(value)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def period(rows: Sequence[Stats]) -> str:
    total = next((r for r in rows if r.name == TOTAL), None)
    if total is None or total.first_ts is None or total.last_ts is None:
        return "period: nothing journaled"
    return f"period: {_when(total.first_ts)} to {_when(total.last_ts)} UTC"


def _when(ts: float) -> str:
    return utc(ts).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Sequence[Stats], notes: Sequence[str] = ()) -> str:
    """The readable table: one line per account, the total last, then the notes."""
    grid = [[h for h, _, _ in COLUMNS]]
    grid += [[cell(r, key, kind) for _, key, kind in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    lines = []
    for line in grid:
        parts = [line[0].ljust(widths[0])]
        parts += [v.rjust(w) for v, w in zip(line[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
    lines.append(period(rows))
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def to_json(
    rows: Sequence[Stats],
    notes: Sequence[str] = (),
    since: float | None = None,
    trades: Sequence[AccountTrade] = (),
) -> str:
    accounts = [rounded(r) for r in rows if r.name != TOTAL]
    total = next((rounded(r) for r in rows if r.name == TOTAL), None)
    document: dict[str, Any] = {
        "since": iso_s(since) if since is not None else None,
        "accounts": accounts,
        "total": total,
        "trades": trade_dicts(trades),
        "notes": list(notes),
    }
    return json.dumps(document, indent=2)


def to_csv(rows: Sequence[Stats]) -> str:
    """One row per account and the total, every statistic a column (empty when unknown)."""
    buffer = io.StringIO()
    fields = list(rows[0].to_dict()) if rows else ["name"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in rounded(row).items()})
    return buffer.getvalue()


def rounded(row: Stats) -> dict[str, Any]:
    """The row's fields, each number rounded as the module's docstring says."""
    return {k: _round(v, _DECIMALS.get(k)) for k, v in row.to_dict().items()}


def trade_dicts(trades: Sequence[AccountTrade]) -> list[dict[str, Any]]:
    """The trades for JSON: times in ISO (UTC, ms), prices and P&L rounded."""
    places = price_decimals(t for _, t in trades)
    out = []
    for account, t in trades:
        digits = places.get(t.instrument)
        out.append({
            "account": account, "trade_id": t.trade_id, "order_ref": t.order_ref,
            "instrument": t.instrument, "side": t.side, "volume": _round(t.volume, 8),
            "state": t.state, "opened": iso_ms(t.opened_ts),
            "open_price": _round(t.fill_price, digits), "closed": iso_ms(t.closed_ts),
            "close_price": _round(t.close_price, digits),
            "realized_pl": _round(t.realized_pl, MONEY_DECIMALS),
            "price_source": t.price_source,
        })  # fmt: skip
    return out


def price_decimals(trades: Iterable[JournalTrade]) -> dict[str, int]:
    """Per instrument, the decimals its prices are quoted with: the most that any of its
    prices in the journals shows (at most :data:`PRICE_DECIMALS_MAX`). The API does not
    state an instrument's precision (``/meta_instrument`` has no such field); the
    server's own prices show it (the simulator's: its instrument list's ``decimals``)."""
    places: dict[str, int] = {}
    for trade in trades:
        for price in (trade.fill_price, trade.close_price):
            if price is not None:
                shown = f"{price:.{PRICE_DECIMALS_MAX}f}".rstrip("0").split(".")[1]
                places[trade.instrument] = max(places.get(trade.instrument, 0), len(shown))
    return places


def _round(value: Any, places: int | None) -> Any:
    if not isinstance(value, float) or places is None:
        return value
    return round(value, places) + 0.0  # + 0.0: no "-0.0"


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
p.sub { color: #666; margin: 0 0 16px 0; }
.chart svg { width: 100%; height: auto; max-width: 1200px; }
table { border-collapse: collapse; margin-top: 12px; font-size: 14px; }
th, td { padding: 4px 10px; text-align: right; border-bottom: 1px solid #e5e5e5;
         font-variant-numeric: tabular-nums; }
th:first-child, td:first-child { text-align: left; }
th { background: #f5f5f5; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
td.pos { color: #1a7f37; } td.neg { color: #c0392b; }
ul.notes { color: #666; font-size: 13px; }
h2 { font-size: 16px; margin: 20px 0 0 0; }
table.trades { font-size: 13px; } table.trades .l { text-align: left; }
p.legend { font-size: 13px; color: #444; max-width: 1200px; line-height: 1.7; }
p.legend span { display: inline-block; margin-right: 18px; } p.legend b { color: #222; }
"""

_LEGEND = (
    ("ORDERS", "orders sent in the period, any outcome"),
    ("CLOSED", "trades closed in the period"),
    ("WIN%", "closed trades with a profit, of those with a known P&L"),
    ("REALIZED", "sum of the closed trades' P&L"),
    ("PF", "profit factor: gross profit / gross loss (above 1 makes money)"),
    ("EXPECT", "average P&L per closed trade"),
    ("MAX DD", "largest fall of the curve above from its peak, the period's start included"),
    ("OPEN / OPEN VOL", "trades still open now, and their total volume"),
    ("UNREAL", "unrealized P&L of the trades still open (the last equity sample's)"),
    ("curve", "realized P&L stepped at each close + unrealized; ends at REALIZED + UNREAL"),
)


def to_html(
    rows: Sequence[Stats],
    chart_svg: str,
    notes: Sequence[str] = (),
    title: str = "",
    trades: Sequence[AccountTrade] = (),
) -> str:
    """One self-contained page: inline CSS and SVG, no script, nothing fetched."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for _, key, kind in COLUMNS:
            text = cell(row, key, kind)
            cells.append(f"<td{_tone(text) if kind == 'money' else ''}>{html.escape(text)}</td>")
        klass = " class='total'" if row.name == TOTAL else ""
        body.append(f"<tr{klass}>{''.join(cells)}</tr>")
    legend = "".join(f"<span><b>{html.escape(k)}</b>: {html.escape(v)}</span>" for k, v in _LEGEND)
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    name = html.escape(title or "multirun report")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{name}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{name}</h1><p class='sub'>{html.escape(period(rows))}</p>"
        f"<div class='chart'>{chart_svg}</div>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<ul class='notes'>{note_items}</ul><p class='legend'>{legend}</p>"
        f"{trades_html(trades)}</body></html>\n"
    )


TRADE_COLUMNS = ("ACCOUNT", "TRADE ID", "INSTRUMENT", "SIDE", "VOLUME", "OPENED (UTC)",
                 "OPEN PRICE", "CLOSED (UTC)", "CLOSE PRICE", "P&L")  # fmt: skip


_LEFT = (0, 2, 3)  # the trades table's text columns: account, instrument, side


def trades_html(trades: Sequence[AccountTrade]) -> str:
    """The trades table: each trade closed in the period or still held, as it opened."""
    places = price_decimals(t for _, t in trades)
    head = "".join(
        f"<th{' class=l' if i in _LEFT else ''}>{html.escape(h)}</th>"
        for i, h in enumerate(TRADE_COLUMNS)
    )
    body = []
    for account, t in trades:
        digits = places.get(t.instrument, 0)
        pl = "-" if t.realized_pl is None else f"{t.realized_pl:+,.{MONEY_DECIMALS}f}"
        pl += " *" if t.price_source == "quote" and t.realized_pl is not None else ""
        texts = (
            account, t.trade_id or "-", t.instrument, t.side, f"{t.volume:g}",
            _when(t.opened_ts) if t.opened_ts else "-", _price(t.fill_price, digits),
            _when(t.closed_ts) if t.is_closed and t.closed_ts else t.state.lower(),
            _price(t.close_price, digits),
        )  # fmt: skip
        cells = "".join(
            f"<td{' class=l' if i in _LEFT else ''}>{html.escape(x)}</td>"
            for i, x in enumerate(texts)
        )
        body.append(f"<tr>{cells}<td{_tone(pl)}>{html.escape(pl)}</td></tr>")
    if not body:
        return "<h2>Trades</h2><p class='sub'>no trade closed or held in the period</p>"
    return (
        f"<h2>Trades ({len(body)})</h2><table class='trades'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table><p class='legend'>Each trade closed in the "
        "period or still held, in the order they opened. P&amp;L: the server's figure; "
        "* estimated from the last quote seen.</p>"
    )


def _price(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _tone(text: str) -> str:
    """The class of a signed money cell: green a gain, red a loss."""
    value = text.rstrip(" *")
    if value.startswith("+") and value != "+0.00":
        return " class='pos'"
    if value.startswith("-") and value not in ("-", "-0.00"):
        return " class='neg'"
    return ""
