"""Rendering a report: the terminal table, JSON, CSV, and the self-contained HTML page."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from typing import Any

from multirun.core.clock import iso_s, utc
from multirun.report.stats import TOTAL, Stats

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


def to_json(rows: Sequence[Stats], notes: Sequence[str] = (), since: float | None = None) -> str:
    accounts = [r.to_dict() for r in rows if r.name != TOTAL]
    total = next((r.to_dict() for r in rows if r.name == TOTAL), None)
    document: dict[str, Any] = {
        "since": iso_s(since) if since is not None else None,
        "accounts": accounts,
        "total": total,
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
        writer.writerow({k: "" if v is None else v for k, v in row.to_dict().items()})
    return buffer.getvalue()


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
    ("MAX DD", "largest fall of the equity from its peak"),
    ("OPEN / OPEN VOL", "trades still open now, and their total volume"),
    ("UNREAL", "unrealized P&L at the last equity sample"),
)


def to_html(
    rows: Sequence[Stats], chart_svg: str, notes: Sequence[str] = (), title: str = ""
) -> str:
    """One self-contained page: inline CSS and SVG, no script, nothing fetched."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for _, key, kind in COLUMNS:
            text = cell(row, key, kind)
            tone = ""
            if kind == "money" and key != "max_drawdown" and text.startswith(("+", "-")):
                tone = " class='pos'" if text.startswith("+") and text != "+0.00" else ""
                tone = " class='neg'" if text.startswith("-") and text != "-" else tone
            cells.append(f"<td{tone}>{html.escape(text)}</td>")
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
        f"<ul class='notes'>{note_items}</ul><p class='legend'>{legend}</p></body></html>\n"
    )
