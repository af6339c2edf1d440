"""Request parameters, checked and spelled as the API wants them before anything is sent.

A bad argument raises ValueError here, before any request leaves: requests cannot
encode NaN or infinity, and a send that fails that way would look like a lost send
(reconciled, then resent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from multirun.api.models import API_TS_FORMAT

ORDER_TYPES = ("MKT", "LMT", "STOP")

# An /open_order body: the API's field names to strings and numbers.
OrderBody = dict[str, str | float]


def order_body(
    instrument: str,
    buysell: str | int,
    volume: float,
    order_ref: str,
    ordertype: str,
    price: float | None,
    timeinforce: float | None,
    take_profit: float | None,
    stop_loss: float | None,
    holdtime: float | None,
) -> OrderBody:
    """The ``/open_order`` body for these arguments; ValueError for a bad one."""
    if not isinstance(order_ref, str) or not order_ref.strip():
        raise ValueError("open_order needs a non-empty order_ref")
    if order_ref != order_ref.strip():
        # a server that trims it would list a ref we could never match: sent again
        raise ValueError("order_ref must not start or end with whitespace")
    if ordertype not in ORDER_TYPES:
        raise ValueError(f"ordertype must be one of {', '.join(ORDER_TYPES)}")
    if ordertype != "MKT" and price is None:
        raise ValueError(f"a {ordertype} order needs a price")
    if _number("volume", volume) <= 0:
        raise ValueError("volume must be > 0")
    body: OrderBody = {
        "instrument": instrument,
        "buysell": _side(buysell),
        "volume": float(volume),
        "ordertype": ordertype,
        "orderRef": order_ref,
    }
    optional = {
        "price": price,
        "timeinforce": timeinforce,
        "takeProfitLevel": take_profit,
        "stopLossLevel": stop_loss,
        "holdtime": holdtime,
    }
    given = {k: v for k, v in optional.items() if v is not None}
    for name, value in given.items():
        _number(name, value)
    body.update(given)
    return body


# One trade id or several, as the client's close and cancel take them.
TradeIds = str | int | Iterable[str | int]


def trade_ids_of(trade_ids: TradeIds) -> list[str]:
    """Trade ids as distinct, non-empty strings, in order."""
    items = [trade_ids] if isinstance(trade_ids, str | int) else list(trade_ids)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def api_time(moment: datetime | str) -> str:
    """A UTC datetime (naive: taken as UTC) in the API's timestamp format; text as is."""
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime(API_TS_FORMAT)


def _side(buysell: str | int) -> str:
    if isinstance(buysell, str) and buysell.strip().upper() in ("BUY", "SELL"):
        return buysell.strip().upper()
    if not isinstance(buysell, bool) and buysell in (1, -1):
        return "BUY" if buysell == 1 else "SELL"
    raise ValueError("buysell must be BUY, SELL, 1 or -1")


def _number(name: str, value: object) -> float:
    """``value`` as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)
