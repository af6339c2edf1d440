"""The statistics of a report: pure functions of journals, per account and in total.

Definitions (None where the journal does not know enough):

- ``orders``: orders created in the period (any state); ``trades_closed``: trades
  closed in it; ``priced``: those of them with a realized P&L in the journal.
- ``win_rate``: priced trades with P&L > 0 over priced trades.
- ``realized_pl``: the sum of the priced trades' P&L; ``expectancy`` its mean per trade.
- ``profit_factor``: gross profit over gross loss (None when there is no loss).
- ``max_drawdown``: the largest fall from a running peak of the equity series (the
  server's NAV samples); without samples, of the cumulative realized P&L (from 0).
  ``drawdown_source`` says which.
- ``avg_hold_s``: mean of close time minus fill (or ack) time of the closed trades.
- ``open_count``/``open_volume``: trades of ours still held (OPEN or CLOSING), now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from multirun.account.journal.reader import AccountLog, EquityPoint, JournalTrade

TOTAL = "TOTAL"


@dataclass(frozen=True)
class Stats:
    """One row of the report (an account, or the total)."""

    name: str
    orders: int
    trades_closed: int
    priced: int
    wins: int
    losses: int
    win_rate: float | None
    realized_pl: float | None
    gross_profit: float
    gross_loss: float
    profit_factor: float | None
    expectancy: float | None
    best_trade: float | None
    worst_trade: float | None
    max_drawdown: float | None
    drawdown_source: str | None  # "equity", "realized" or None
    avg_hold_s: float | None
    open_count: int
    open_volume: float
    nav: float | None  # the last equity sample's
    unrealized_pl: float | None
    first_ts: float | None
    last_ts: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def account_stats(log: AccountLog, since: float | None = None) -> Stats:
    """The statistics of one account's journal from ``since`` (None: all of it)."""
    equity = [p for p in log.equity if since is None or p.ts >= since]
    drawdown, source = _account_drawdown(log.trades, equity, since)
    return _stats(log.name, log.trades, since, drawdown, source, equity_last=[equity])


def total_stats(logs: Sequence[AccountLog], since: float | None = None) -> Stats:
    """The statistics of every account together; the drawdown is the combined curve's."""
    trades = [t for log in logs for t in log.trades]
    series = [[p for p in log.equity if since is None or p.ts >= since] for log in logs]
    drawdown: float | None
    source: str | None
    if series and all(any(p.nav is not None for p in s) for s in series):
        drawdown, source = max_drawdown(combined_equity(series)), "equity"
    else:
        drawdown, source = _realized_drawdown(trades, since)
    return _stats(TOTAL, trades, since, drawdown, source, equity_last=series)


def max_drawdown(values: Iterable[float]) -> float | None:
    """The largest fall from a running peak (0.0 when it never falls; None when empty)."""
    peak: float | None = None
    worst: float | None = None
    for value in values:
        peak = value if peak is None else max(peak, value)
        fall = peak - value
        worst = fall if worst is None else max(worst, fall)
    return worst


def realized_curve(
    trades: Iterable[JournalTrade], since: float | None = None
) -> list[tuple[float, float]]:
    """(close time, cumulative realized P&L) of the priced closed trades, from 0."""
    closed = sorted(
        (t for t in _closed(trades, since) if t.realized_pl is not None),
        key=lambda t: t.closed_ts or 0.0,
    )
    total = 0.0
    curve = []
    for trade in closed:
        total += trade.realized_pl or 0.0
        curve.append((trade.closed_ts or 0.0, total))
    return curve


def combined_equity(series: Sequence[Sequence[EquityPoint]]) -> list[float]:
    """The sum of the accounts' NAVs at every sample time, each carried forward (and an
    account not sampled yet counted at its first NAV, so a late start is no jump)."""
    navs = [[(p.ts, p.nav) for p in s if p.nav is not None] for s in series]
    navs = [n for n in navs if n]
    if not navs:
        return []
    times = sorted({ts for n in navs for ts, _ in n})
    index = [0] * len(navs)
    current = [n[0][1] for n in navs]
    out = []
    for ts in times:
        for i, points in enumerate(navs):
            while index[i] < len(points) and points[index[i]][0] <= ts:
                current[i] = points[index[i]][1]
                index[i] += 1
        out.append(sum(current))
    return out


def _account_drawdown(
    trades: Sequence[JournalTrade], equity: Sequence[EquityPoint], since: float | None
) -> tuple[float | None, str | None]:
    navs = [p.nav for p in equity if p.nav is not None]
    if navs:
        return max_drawdown(navs), "equity"
    return _realized_drawdown(trades, since)


def _realized_drawdown(
    trades: Iterable[JournalTrade], since: float | None
) -> tuple[float | None, str | None]:
    curve = realized_curve(trades, since)
    if not curve:
        return None, None
    return max_drawdown([0.0] + [v for _, v in curve]), "realized"


def _closed(trades: Iterable[JournalTrade], since: float | None) -> list[JournalTrade]:
    return [
        t
        for t in trades
        if t.is_closed and (since is None or (t.closed_ts or t.created_ts) >= since)
    ]


def _stats(
    name: str,
    trades: Sequence[JournalTrade],
    since: float | None,
    drawdown: float | None,
    source: str | None,
    *,
    equity_last: Sequence[Sequence[EquityPoint]],
) -> Stats:
    created = [t for t in trades if since is None or t.created_ts >= since]
    closed = _closed(trades, since)
    pls = [t.realized_pl for t in closed if t.realized_pl is not None]
    profits = [p for p in pls if p > 0]
    losses = [p for p in pls if p < 0]
    gross_profit, gross_loss = sum(profits), -sum(losses)
    holds = [h for h in (t.hold_s for t in closed) if h is not None]
    held = [t for t in trades if t.is_held]
    lasts = [s[-1] for s in equity_last if s]
    navs = [p.nav for p in lasts if p.nav is not None]
    unrealized = [p.unrealized_pl for p in lasts if p.unrealized_pl is not None]
    stamps = [t.created_ts for t in created] + [t.closed_ts for t in closed if t.closed_ts]
    stamps += [p.ts for s in equity_last for p in s]
    return Stats(
        name=name,
        orders=len(created),
        trades_closed=len(closed),
        priced=len(pls),
        wins=len(profits),
        losses=len(losses),
        win_rate=len(profits) / len(pls) if pls else None,
        realized_pl=sum(pls) if pls else None,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        profit_factor=gross_profit / gross_loss if gross_loss > 0 else None,
        expectancy=sum(pls) / len(pls) if pls else None,
        best_trade=max(pls) if pls else None,
        worst_trade=min(pls) if pls else None,
        max_drawdown=drawdown,
        drawdown_source=source,
        avg_hold_s=sum(holds) / len(holds) if holds else None,
        open_count=len(held),
        open_volume=sum(t.volume for t in held),
        nav=sum(navs) if navs and len(navs) == len(equity_last) else None,
        unrealized_pl=sum(unrealized) if unrealized else None,
        first_ts=min(stamps) if stamps else None,
        last_ts=max(stamps) if stamps else None,
    )
