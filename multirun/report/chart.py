"""The report's picture: each account's equity curve, the combined one, and trade markers.

Drawn with matplotlib's Agg backend (no display, no JavaScript): ``svg()`` for the HTML
page (text as paths, so no font is fetched at view time), ``write_png()`` for chat. A
curve is the account's P&L since the period began: its NAV samples minus the first one,
or, for a journal without NAV samples, its cumulative realized P&L. Markers: ▲ a buy
opened, ▼ a sell opened, ● a trade closed, each on its account's curve.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib import dates as mdates
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from multirun.account.journal.reader import AccountLog
from multirun.report.stats import combined_equity, realized_curve

WIDTH_PX, HEIGHT_PX, DPI = 1200, 600, 100
Curve = list[tuple[float, float]]


def curve(log: AccountLog, since: float | None = None) -> Curve:
    """(time, P&L since the period began) for one account; empty when nothing is known."""
    navs = [(p.ts, p.nav) for p in log.equity if p.nav is not None]
    navs = [(ts, nav) for ts, nav in navs if since is None or ts >= since]
    if navs:
        base = navs[0][1]
        return [(ts, nav - base) for ts, nav in navs]
    points = realized_curve(log.trades, since)
    if not points:
        return []
    start = min([t.created_ts for t in log.trades if since is None or t.created_ts >= since])
    start = min(start, points[0][0]) if since is None else max(since, min(start, points[0][0]))
    return [(start, 0.0), *points]


def combined(logs: Sequence[AccountLog], since: float | None = None) -> Curve:
    """The accounts' curves summed (NAVs when every account has samples)."""
    series = [[p for p in log.equity if since is None or p.ts >= since] for log in logs]
    if series and all(any(p.nav is not None for p in s) for s in series):
        times = sorted({p.ts for s in series for p in s if p.nav is not None})
        totals = combined_equity(series)
        return [(ts, v - totals[0]) for ts, v in zip(times, totals, strict=True)]
    curves = [c for c in (curve(log, since) for log in logs) if c]
    times = sorted({ts for c in curves for ts, _ in c})
    return [(ts, sum(_at(c, ts) for c in curves)) for ts in times]


def figure(logs: Sequence[AccountLog], since: float | None = None) -> Figure:
    """The chart of ``logs``: one line per account, the combined line, the markers."""
    fig = plt.figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    colours = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    drawn = 0
    for i, log in enumerate(logs):
        points = curve(log, since)
        if not points:
            continue
        colour = to_hex(colours[i % len(colours)])
        ax.step(_dates(points), [v for _, v in points], where="post", color=colour,
                linewidth=1.6, label=log.name)  # fmt: skip
        _markers(ax, log, points, colour, since)
        drawn += 1
    total = combined(logs, since)
    if drawn > 1 and total:
        ax.step(_dates(total), [v for _, v in total], where="post", color="black",
                linewidth=2.4, label="all accounts")  # fmt: skip
    ax.xaxis_date(tz=UTC)
    ax.axhline(0.0, color="#999999", linewidth=0.8)
    ax.set_ylabel("P&L since the period began")
    ax.set_title("Equity by account (▲ buy opened, ▼ sell opened, ● closed)", loc="left")
    ax.grid(True, color="#e5e5e5")
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "no trades or equity samples in the journals", ha="center",
                va="center", transform=ax.transAxes, color="#666666")  # fmt: skip
    fig.tight_layout()
    return fig


def svg(fig: Figure) -> str:
    """The figure as an SVG element (fonts drawn as paths: nothing to fetch)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "multirun"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def write_png(fig: Figure, path: Path) -> None:
    """The figure as a WIDTH_PX x HEIGHT_PX PNG at ``path``."""
    path.write_bytes(png_bytes(fig))


def close(fig: Figure) -> None:
    plt.close(fig)


def _markers(ax: Axes, log: AccountLog, points: Curve, colour: str, since: float | None) -> None:
    opens: dict[str, list[tuple[float, float]]] = {"BUY": [], "SELL": []}
    closes = []
    for trade in log.trades:
        ts = trade.opened_ts
        if ts is not None and (since is None or ts >= since) and trade.state != "ABANDONED":
            opens.setdefault(trade.side, []).append((ts, _at(points, ts)))
        ts = trade.closed_ts
        if trade.is_closed and ts is not None and (since is None or ts >= since):
            closes.append((ts, _at(points, ts)))
    for side, marker in (("BUY", "^"), ("SELL", "v")):
        if opens.get(side):
            ax.scatter(_dates(opens[side]), [v for _, v in opens[side]], marker=marker,
                       color=colour, s=36, zorder=3)  # fmt: skip
    if closes:
        ax.scatter(_dates(closes), [v for _, v in closes], marker="o", facecolors="white",
                   edgecolors=colour, s=30, zorder=3)  # fmt: skip


def _at(points: Curve, ts: float) -> float:
    """The step curve's value at ``ts`` (its first value before it starts)."""
    value = points[0][1]
    for when, v in points:
        if when > ts:
            break
        value = v
    return value


def _dates(points: Sequence[tuple[float, float]]) -> list[float]:
    """Matplotlib's date numbers of the points' Unix times (UTC)."""
    return [float(mdates.date2num(datetime.fromtimestamp(ts, UTC))) for ts, _ in points]
