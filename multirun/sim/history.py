"""An account's past as the reporting calls (``/strategy_*``) show it.

Pure functions of the account and its orders (oldest first): every fill is an ``open``
transaction and every close a ``close`` transaction, in ascending time. Money is added up
in whole cents: each closed trade's realizedPL is rounded to cents once, when it closes,
and every total is the sum of those rounded figures (so the totals equal the sum of the
trades a client lists, exactly). The market's part (what an open trade is worth at a
moment, the margin it takes) comes from the broker as a :data:`Valuer`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from datetime import UTC, datetime

from multirun.sim.clock import fmt_ts
from multirun.sim.orders import Account, Order
from multirun.sim.params import ApiFail

DAY_S = 86_400.0
LAST_MICROSECOND = 1e-6  # a past day is valued at its last microsecond
MAX_DAYS = 3660  # daily records kept: the most recent ten years (the clock can jump far)
MAX_LOG_LINES = 2000  # as ALGOGENE's /strategy_logs
# (unrealized P&L in cents, margin used) of the given trades, at a moment
Valuer = Callable[[list[Order], float], tuple[int, float]]


def cents(amount: float) -> int:
    """``amount`` in whole cents, rounded as ``round(amount, 2)`` shows it."""
    return round(round(amount, 2) * 100)


def acdate(raw: str) -> float | None:
    """The start (UTC) of an ``acdate`` ``YYYY-MM-DD``; None when empty (the full history)."""
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ApiFail(400, "invalid parameter: acdate must be YYYY-MM-DD") from None
    return day.timestamp()


def _date(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def _on(moment: float, day: float | None) -> bool:
    return day is None or day <= moment < day + DAY_S


def held(order: Order, at: float) -> bool:
    """Whether ``order`` was an open trade at the moment ``at``."""
    if order.filled is None or order.filled > at:
        return False
    return order.closed is None or order.close_price is None or order.closed > at


def realized_cents(orders: list[Order], at: float = math.inf) -> int:
    """The realized P&L of the trades of ``orders`` closed by ``at``, in cents."""
    return sum(
        cents(o.realized_pl)
        for o in orders
        if o.closed is not None and o.close_price is not None and o.closed <= at
    )


def balance_fields(
    initial: float, realized: int, unrealized: int, margin: float
) -> dict[str, float]:
    """``/balance``'s money fields (also one ``/strategy_bal`` record's); P&L in cents."""
    nav = initial + (realized + unrealized) / 100
    return {
        "NAV": round(nav, 2),
        "available_Balance": round(nav - margin, 2),
        "margin_Used": round(margin, 2),
        "realized_PL": realized / 100,
        "unrealized_PL": unrealized / 100,
    }


def day_ends(first: float, now: float, day: float | None) -> list[tuple[str, float]]:
    """(``Acdate``, the moment it is valued at) for every UTC day from ``first``'s to
    ``now``'s (only ``day``'s, if given): a past day at its last microsecond, today now."""
    start = math.floor(first / DAY_S) * DAY_S
    today = math.floor(now / DAY_S) * DAY_S
    if day is not None:
        starts = [day] if start <= day <= today else []
    else:
        count = min(MAX_DAYS, round((today - start) / DAY_S) + 1)
        starts = [today - DAY_S * i for i in reversed(range(count))]
    return [(_date(s), min(now, s + DAY_S - LAST_MICROSECOND)) for s in starts]


def transactions(
    orders: list[Order], day: float | None, ref: str | None
) -> list[dict[str, object]]:
    """Every fill and close of ``orders`` (on ``day`` and carrying ``ref``, if given)."""
    events: list[tuple[float, int, int, dict[str, object]]] = []
    for order in orders:
        if ref is not None and order.order_ref != ref:
            continue
        if order.filled is not None and order.fill_price is not None:
            row = _row(order, "open", order.buysell, order.fill_price, order.filled, 0.0)
            events.append((order.filled, order.trade_id, 0, row))
        if order.closed is not None and order.close_price is not None:
            pl = order.realized_pl
            row = _row(order, "close", -order.buysell, order.close_price, order.closed, pl)
            row["close_reason"] = order.close_reason
            events.append((order.closed, order.trade_id, 1, row))
    events.sort(key=lambda e: e[:3])
    return [row for moment, _, _, row in events if _on(moment, day)]


def _row(
    order: Order, openclose: str, side: int, price: float, moment: float, pl: float
) -> dict[str, object]:
    return {
        "trade_ID": str(order.trade_id),
        "order_ref": order.order_ref,
        "instrument": order.instrument,
        "symbol": order.instrument,
        "buysell": side,
        "openclose": openclose,
        "price": price,
        "volume": order.volume,
        "timestamp": fmt_ts(moment),
        "realizedPL": pl,
    }


def daily_pl(orders: list[Order], day: float | None = None) -> list[dict[str, object]]:
    """One record per UTC day with closes (or ``day``'s): cumulative ``TotalPL`` and per
    instrument."""
    closes = sorted(
        (o.closed, o.instrument, cents(o.realized_pl))
        for o in orders
        if o.closed is not None and o.close_price is not None
    )
    totals: dict[str, int] = {}
    records: dict[str, dict[str, object]] = {}
    for moment, instrument, pl in closes:
        totals[instrument] = totals.get(instrument, 0) + pl
        date = _date(moment)
        record: dict[str, object] = {"Acdate": date, "TotalPL": sum(totals.values()) / 100}
        record.update({k: v / 100 for k, v in sorted(totals.items())})
        records[date] = record
    if day is not None:
        return [r for r in records.values() if r["Acdate"] == _date(day)]
    return list(records.values())


def daily_bal(
    account: Account, orders: list[Order], ends: list[tuple[str, float]], value: Valuer
) -> list[dict[str, object]]:
    """One ``/strategy_bal`` record per day of ``ends``: the balance at that moment."""
    records: list[dict[str, object]] = []
    for date, at in ends:
        unrealized, margin = value([o for o in orders if held(o, at)], at)
        fields = balance_fields(account.initial, realized_cents(orders, at), unrealized, margin)
        records.append({"Acdate": date, **fields, "BaseCurrency": "USD"})
    return records


def daily_pos(orders: list[Order], ends: list[tuple[str, float]]) -> list[dict[str, object]]:
    """One ``/strategy_pos`` record per day of ``ends``: the net volume (lots, signed) of
    every instrument traded by then (0.0 once flat)."""
    records: list[dict[str, object]] = []
    for date, at in ends:
        nets: dict[str, float] = {}
        for order in orders:
            if order.filled is not None and order.filled <= at:
                volume = order.buysell * order.volume if held(order, at) else 0.0
                nets[order.instrument] = nets.get(order.instrument, 0.0) + volume
        records.append({"Acdate": date, **{k: round(v, 8) for k, v in sorted(nets.items())}})
    return records


def cashflow(account: Account, day: float | None) -> list[dict[str, object]]:
    """The account's cash flows: its starting cash, deposited when it was first used (the
    simulator has no other deposit, withdrawal or dividend)."""
    if not _on(account.opened, day):
        return []
    return [
        {
            "Acdate": _date(account.opened),
            "Cash_flow": round(account.initial, 2),
            "Event": "Deposit",
            "timestamp": fmt_ts(account.opened),
        }
    ]


def log_lines(orders: list[Order]) -> list[str]:
    """The account's system log: each order's arrival, fill, close or cancellation, in
    time order (the last :data:`MAX_LOG_LINES`)."""
    events: list[tuple[float, int, int, str]] = []
    for o in orders:
        side = "BUY" if o.buysell > 0 else "SELL"
        at_price = f" @ {o.price}" if o.ordertype != "MKT" else ""
        events.append(
            (
                o.received,
                o.trade_id,
                0,
                f"order {o.trade_id} received: {side} {o.volume} {o.instrument} "
                f"{o.ordertype}{at_price} orderRef={o.order_ref!r}",
            )
        )
        if o.filled is not None:
            events.append((o.filled, o.trade_id, 1, f"order {o.trade_id} filled at {o.fill_price}"))
        if o.closed is not None and o.close_price is not None:
            line = (
                f"trade {o.trade_id} closed at {o.close_price} ({o.close_reason}), "
                f"realizedPL {o.realized_pl:.2f}"
            )
            events.append((o.closed, o.trade_id, 2, line))
        elif o.closed is not None:
            events.append((o.closed, o.trade_id, 2, f"order {o.trade_id} {o.close_reason}"))
    events.sort(key=lambda e: e[:3])
    return [f"{fmt_ts(moment)} {text}" for moment, _, _, text in events[-MAX_LOG_LINES:]]


def stats(
    orders: list[Order], settings: dict[str, object], unrealized: int | None, day: float | None
) -> dict[str, object]:
    """``{"settings": ..., "performance": ...}`` up to the end of ``day`` (or now);
    ``unrealized`` in cents (None: left out)."""
    end = math.inf if day is None else day + DAY_S - LAST_MICROSECOND
    upto = [o for o in orders if o.filled is not None and o.filled <= end]
    realized = realized_cents(upto, end)
    records = daily_pl([o for o in upto if o.closed is None or o.closed <= end])
    cumulative = [float(r["TotalPL"]) for r in records]  # type: ignore[arg-type]
    steps = [b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False)]
    sharpe = 0.0
    if len(steps) >= 2 and statistics.pstdev(steps) > 0:
        sharpe = statistics.fmean(steps) / statistics.pstdev(steps) * math.sqrt(252)
    return {
        "settings": settings,
        "performance": {
            "TotalPnL": (realized + (unrealized or 0)) / 100,
            "RealizedPnL": realized / 100,
            "UnrealizedPnL": (unrealized or 0) / 100,
            "AnnualSharpe": round(sharpe, 4),
            "TradeCnt": len(upto),
        },
    }
