"""The statistics of a report: pure functions of journals, per account and in total.

Definitions (None where the journal does not know enough):

- ``orders``: orders created in the period (any state); ``trades_closed``: trades
  closed in it; ``priced``: those of them with a realized P&L in the journal.
- ``win_rate``: priced trades with P&L > 0 over priced trades.
- ``realized_pl``: the sum of the priced trades' P&L; ``expectancy`` its mean per trade.
- ``profit_factor``: gross profit over gross loss (None when there is no loss).
- The **equity curve** (:func:`equity_curve`) of an account is its P&L over the period,
  from the period's start (before its first order): the realized P&L of the trades
  closed in the period, stepped at each close, plus the unrealized P&L of the trades
  held. The unrealized part is the journal's equity samples' (the server's
  ``/balance``); it is 0 after a close that leaves nothing of ours held, and a close
  that leaves a trade held keeps the curve where it was (closing moves P&L from
  unrealized to realized, not the equity) until the next sample. Without samples the
  curve is the realized P&L alone (``drawdown_source`` ``"realized"``, else
  ``"equity"``). It ends at ``realized_pl + unrealized_pl`` (an unknown UNREAL as 0).
- ``max_drawdown``: the largest fall of the equity curve from a running peak, its
  start included; of the accounts' curves summed for the total.
- ``unrealized_pl``: the curve's unrealized part at its end (None: a trade held now
  opened after the last sample); ``nav``: the last equity sample's NAV.
- ``avg_hold_s``: mean of close time minus fill (or ack) time of the closed trades.
- ``open_count``/``open_volume``: trades of ours still held (OPEN or CLOSING), now.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from multirun.account.journal.reader import AccountLog, EquityPoint, JournalTrade

TOTAL = "TOTAL"
Points = tuple[tuple[float, float], ...]  # (Unix time, P&L), oldest first


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
    unrealized_pl: float | None  # at the equity curve's end
    first_ts: float | None
    last_ts: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EquityCurve:
    """An account's (or all accounts') P&L over the period, a step function."""

    points: Points  # empty: nothing happened in the period
    unrealized: float | None  # the unrealized part at the last point; None: unknown
    source: str | None  # "equity" (samples used), "realized" (closes only), None


def account_stats(log: AccountLog, since: float | None = None) -> Stats:
    """The statistics of one account's journal from ``since`` (None: all of it)."""
    equity = [p for p in log.equity if since is None or p.ts >= since]
    return _stats(log.name, log.trades, since, equity_curve(log, since), [equity])


def total_stats(logs: Sequence[AccountLog], since: float | None = None) -> Stats:
    """The statistics of every account together; the drawdown is the summed curve's."""
    trades = [t for log in logs for t in log.trades]
    series = [[p for p in log.equity if since is None or p.ts >= since] for log in logs]
    curve = combined_curve([equity_curve(log, since) for log in logs])
    return _stats(TOTAL, trades, since, curve, series)


def max_drawdown(values: Iterable[float]) -> float | None:
    """The largest fall from a running peak (0.0 when it never falls; None when empty)."""
    peak: float | None = None
    worst: float | None = None
    for value in values:
        peak = value if peak is None else max(peak, value)
        fall = peak - value
        worst = fall if worst is None else max(worst, fall)
    return worst


def equity_curve(log: AccountLog, since: float | None = None) -> EquityCurve:
    """The account's equity curve over the period (see the module's docstring)."""
    start = _period_start(log, since)
    if start is None:
        return EquityCurve((), None, None)
    walk = _walk(log)
    before = [state for state in walk if state[0] < start]
    base, unrealized = (before[-1][1], before[-1][2]) if before else (0.0, 0.0)
    points = [(start, unrealized or 0.0)]  # what was held at the start, as last estimated
    for ts, realized, unrealized in walk[len(before) :]:
        points.append((ts, realized - base + (unrealized or 0.0)))
    if _unmeasured(log.trades, log.equity):
        unrealized = None
    return EquityCurve(tuple(points), unrealized, "equity" if _samples(log) else "realized")


State = tuple[float, float, float | None]  # (time, realized P&L, unrealized P&L or None)
_CLOSE, _SAMPLE = 0, 1  # at the same time, the close first: the worker samples after


def _walk(log: AccountLog) -> list[State]:
    """The journal's whole history, one state after each priced close and each sample."""
    held = _Holdings(log.trades)
    samples = _samples(log)
    realized = 0.0
    unrealized: float | None = 0.0
    states: list[State] = []
    for ts, kind, amount in _events(log.trades, samples):
        if kind == _SAMPLE:
            unrealized = amount
        else:
            before = realized + (unrealized or 0.0)
            realized += amount
            if not held.after(ts):
                unrealized = 0.0
            elif unrealized is not None and samples:  # the equity stays: P&L moves from
                unrealized = before - realized  # unrealized to realized
            else:
                unrealized = None
        states.append((ts, realized, unrealized))
    return states


def _events(
    trades: Iterable[JournalTrade], samples: Sequence[EquityPoint]
) -> list[tuple[float, int, float]]:
    """(time, kind, amount) of the priced closes (their P&L) and the samples (their
    unrealized P&L), oldest first."""
    closes = [(t.closed_ts or 0.0, _CLOSE, t.realized_pl or 0.0) for t in trades
              if t.is_closed and t.realized_pl is not None]  # fmt: skip
    return sorted(closes + [(p.ts, _SAMPLE, p.unrealized_pl or 0.0) for p in samples])


def _samples(log: AccountLog) -> list[EquityPoint]:
    return [p for p in log.equity if p.unrealized_pl is not None]


def _unmeasured(trades: Sequence[JournalTrade], samples: Sequence[EquityPoint]) -> bool:
    """A trade held now opened after the last sample: its unrealized P&L is unknown."""
    opened = [t.opened_ts or t.created_ts for t in trades if t.is_held]
    measured = [p.ts for p in samples if p.unrealized_pl is not None]
    return bool(opened) and (not measured or measured[-1] < max(opened))


def combined_curve(curves: Sequence[EquityCurve]) -> EquityCurve:
    """The accounts' curves summed at every time any of them moves (an account counts at
    its first value before its period starts)."""
    drawn = [c for c in curves if c.points]
    if not drawn:
        return EquityCurve((), None, None)
    times = sorted({ts for c in drawn for ts, _ in c.points})
    first = (times[0], sum(c.points[0][1] for c in drawn))  # before any same-time move
    points = (first, *((ts, sum(value_at(c.points, ts) for c in drawn)) for ts in times))
    known = [c.unrealized for c in drawn if c.unrealized is not None]
    sources = {c.source for c in drawn}
    return EquityCurve(points, sum(known) if known else None,
                       "equity" if sources == {"equity"} else "realized")  # fmt: skip


def value_at(points: Points, ts: float) -> float:
    """The step curve's value at ``ts`` (its first value before it starts)."""
    index = bisect_right(points, ts, key=lambda p: p[0])
    return points[max(0, index - 1)][1]


def period_trades(
    logs: Sequence[AccountLog], since: float | None = None
) -> list[tuple[str, JournalTrade]]:
    """(account, trade) of the trades closed in the period and those still held, in the
    order they opened."""
    chosen = [
        (log.name, t) for log in logs for t in log.trades if t.is_held or _closed_in(t, since)
    ]
    return sorted(chosen, key=lambda pair: pair[1].opened_ts or pair[1].created_ts)


class _Holdings:
    """How many trades of ours were held just after a moment (by the journal's times)."""

    def __init__(self, trades: Iterable[JournalTrade]) -> None:
        opened = [t for t in trades if t.opened_ts is not None and (t.is_held or t.is_closed)]
        self.opens = sorted(t.opened_ts or 0.0 for t in opened)
        self.closes = sorted(t.closed_ts for t in opened if t.is_closed and t.closed_ts)

    def after(self, ts: float) -> int:
        return bisect_right(self.opens, ts) - bisect_right(self.closes, ts)


def _period_start(log: AccountLog, since: float | None) -> float | None:
    """The first moment of the period that the journal knows of (an order created, a
    trade closed, an equity sample); None when the period holds none."""
    moments = [t.created_ts for t in log.trades]
    moments += [t.closed_ts for t in log.trades if t.closed_ts is not None]
    moments += [p.ts for p in log.equity]
    inside = [m for m in moments if since is None or m >= since]
    return min(inside) if inside else None


def _closed(trades: Iterable[JournalTrade], since: float | None) -> list[JournalTrade]:
    return [t for t in trades if _closed_in(t, since)]


def _closed_in(trade: JournalTrade, since: float | None) -> bool:
    return trade.is_closed and (since is None or (trade.closed_ts or trade.created_ts) >= since)


def _stats(
    name: str,
    trades: Sequence[JournalTrade],
    since: float | None,
    curve: EquityCurve,
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
    stamps = [t.created_ts for t in created] + [t.closed_ts for t in closed if t.closed_ts]
    stamps += [p.ts for s in equity_last for p in s]
    known = curve.source == "equity" or bool(pls)  # else the curve is flat at 0: no figure
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
        max_drawdown=max_drawdown(v for _, v in curve.points) if known else None,
        drawdown_source=curve.source if known else None,
        avg_hold_s=sum(holds) / len(holds) if holds else None,
        open_count=len(held),
        open_volume=sum(t.volume for t in held),
        nav=sum(navs) if navs and len(navs) == len(equity_last) else None,
        unrealized_pl=curve.unrealized,
        first_ts=min(stamps) if stamps else None,
        last_ts=max(stamps) if stamps else None,
    )
