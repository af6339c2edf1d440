"""An account's past as ``/strategy_trade``, ``/strategy_pl`` and ``/strategy_stats`` show it.

Pure functions of the account's orders (oldest first): every fill is an ``open``
transaction and every close a ``close`` transaction, in ascending time.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime

from multirun.sim.clock import fmt_ts
from multirun.sim.orders import Order
from multirun.sim.params import ApiFail

DAY_S = 86_400.0


def acdate(raw: str) -> float | None:
    """The start (UTC) of an ``acdate`` ``YYYY-MM-DD``; None when empty (the full history)."""
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ApiFail(400, "invalid parameter: acdate must be YYYY-MM-DD") from None
    return day.timestamp()


def _on(moment: float, day: float | None) -> bool:
    return day is None or day <= moment < day + DAY_S


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
            pl = round(order.realized_pl, 2)
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
        (o.closed, o.instrument, o.realized_pl)
        for o in orders
        if o.closed is not None and o.close_price is not None
    )
    totals: dict[str, float] = {}
    records: dict[str, dict[str, object]] = {}
    for moment, instrument, pl in closes:
        totals[instrument] = totals.get(instrument, 0.0) + pl
        date = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")
        record: dict[str, object] = {"Acdate": date, "TotalPL": round(sum(totals.values()), 2)}
        record.update({k: round(v, 2) for k, v in sorted(totals.items())})
        records[date] = record
    if day is not None:
        wanted = datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
        return [r for r in records.values() if r["Acdate"] == wanted]
    return list(records.values())


def stats(
    orders: list[Order], settings: dict[str, object], unrealized: float | None, day: float | None
) -> dict[str, object]:
    """``{"settings": ..., "performance": ...}`` up to the end of ``day`` (or now)."""
    end = math.inf if day is None else day + DAY_S
    upto = [o for o in orders if o.filled is not None and o.filled < end]
    realized = sum(o.realized_pl for o in upto if o.closed is not None and o.closed < end)
    records = daily_pl([o for o in upto if o.closed is None or o.closed < end])
    cumulative = [float(r["TotalPL"]) for r in records]  # type: ignore[arg-type]
    steps = [b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False)]
    sharpe = 0.0
    if len(steps) >= 2 and statistics.pstdev(steps) > 0:
        sharpe = statistics.fmean(steps) / statistics.pstdev(steps) * math.sqrt(252)
    total = realized + (unrealized or 0.0)
    return {
        "settings": settings,
        "performance": {
            "TotalPnL": round(total, 2),
            "RealizedPnL": round(realized, 2),
            "UnrealizedPnL": round(unrealized or 0.0, 2),
            "AnnualSharpe": round(sharpe, 4),
            "TradeCnt": len(upto),
        },
    }
