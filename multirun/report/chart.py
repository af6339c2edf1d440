"""The report's picture: each account's equity curve, the combined one, and trade markers.

Drawn with matplotlib's Agg backend (no display, no JavaScript): ``svg()`` for the HTML
page (text as paths, so no font is fetched at view time), ``write_png()`` for chat. A
curve is the account's equity curve (:func:`multirun.report.stats.equity_curve`: from
the period's start, realized P&L stepped at each close plus the sampled unrealized
P&L), the black one their sum; each ends at the table's REALIZED + UNREAL and falls no
further than its MAX DD. Markers, on their account's curve: ▲ a buy opened, ▼ a sell
opened, ● a trade closed (filled, as the title draws them).
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
from multirun.report.stats import Points, combined_curve, equity_curve, value_at

WIDTH_PX, HEIGHT_PX, DPI = 1200, 600, 100


def figure(logs: Sequence[AccountLog], since: float | None = None) -> Figure:
    """The chart of ``logs``: one line per account, the combined line, the markers."""
    fig = plt.figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    colours = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    drawn = 0
    curves = [equity_curve(log, since) for log in logs]
    for i, (log, curve) in enumerate(zip(logs, curves, strict=True)):
        points = curve.points
        if not points:
            continue
        colour = to_hex(colours[i % len(colours)])
        ax.step(_dates(points), [v for _, v in points], where="post", color=colour,
                linewidth=1.6, label=log.name)  # fmt: skip
        _markers(ax, log, points, colour, since)
        drawn += 1
    total = combined_curve(curves).points
    if drawn > 1 and total:
        ax.step(_dates(total), [v for _, v in total], where="post", color="black",
                linewidth=2.4, label="all accounts")  # fmt: skip
    ax.xaxis_date(tz=UTC)
    ax.axhline(0.0, color="#999999", linewidth=0.8)
    ax.set_ylabel("P&L in the period (realized + unrealized)")
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


def _markers(ax: Axes, log: AccountLog, points: Points, colour: str, since: float | None) -> None:
    opens: dict[str, list[tuple[float, float]]] = {"BUY": [], "SELL": []}
    closes = []
    for trade in log.trades:
        ts = trade.opened_ts
        if ts is not None and (since is None or ts >= since) and trade.state != "ABANDONED":
            opens.setdefault(trade.side, []).append((ts, value_at(points, ts)))
        ts = trade.closed_ts
        if trade.is_closed and ts is not None and (since is None or ts >= since):
            closes.append((ts, value_at(points, ts)))
    for side, marker in (("BUY", "^"), ("SELL", "v")):
        if opens.get(side):
            ax.scatter(_dates(opens[side]), [v for _, v in opens[side]], marker=marker,
                       color=colour, s=36, zorder=3)  # fmt: skip
    if closes:
        ax.scatter(_dates(closes), [v for _, v in closes], marker="o", color=colour,
                   edgecolors="white", linewidths=0.8, s=34, zorder=3)  # fmt: skip


def _dates(points: Sequence[tuple[float, float]]) -> list[float]:
    """Matplotlib's date numbers of the points' Unix times (UTC)."""
    return [float(mdates.date2num(datetime.fromtimestamp(ts, UTC))) for ts, _ in points]
