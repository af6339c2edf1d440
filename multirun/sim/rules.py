"""Order rules: the price an order trades at, and when it fills or closes on its own."""

from __future__ import annotations

from collections.abc import Callable

from multirun.sim.orders import OPEN, PENDING, Order

Quoter = Callable[[str], tuple[float, float]]


def side_price(order: Order, quote: tuple[float, float], opening: bool) -> float:
    """The price ``order`` trades at: buying pays the ask, selling gets the bid."""
    bid, ask = quote
    buying = (order.buysell > 0) == opening  # closing a buy sells
    return ask if buying else bid


def timed_close(order: Order, now: float) -> tuple[float, str] | None:
    """The earliest moment up to ``now`` that a requested close or the holdtime closes at."""
    due: list[tuple[float, str]] = []
    if order.close_due is not None:
        due.append((order.close_due, "closed by request"))
    if order.holdtime > 0 and order.filled is not None:
        # not before the holdtime was set: a shortened holdtime closes from then on
        due.append((max(order.filled + order.holdtime, order.holdtime_set), "holdtime"))
    passed = [d for d in due if d[0] <= now]
    return min(passed) if passed else None


def crossed(order: Order, price: float) -> bool:
    """Whether a limit/stop order's trigger is reached at the price it would fill at."""
    buying = order.buysell > 0
    if order.ordertype == "LMT":
        return price <= order.price if buying else price >= order.price
    return price >= order.price if buying else price <= order.price


def beyond(order: Order, price: float, level: float, *, profit: bool) -> bool:
    """Whether ``price`` (the closing side) reached a take-profit or stop-loss ``level``."""
    up = price >= level
    down = price <= level
    if order.buysell > 0:
        return up if profit else down
    return down if profit else up


def next_moment(order: Order, now: float) -> float | None:
    """When the engine must next look at a watched ``order``: its market fill, its
    time-in-force lapse, its requested close or holdtime, whichever is first; ``now`` while
    it waits for a price (a limit or stop order, a take profit or stop loss: prices move
    continuously, so those are polled); None if nothing of it is due."""
    moments: list[float] = []
    if order.status == PENDING:
        if order.ordertype != "MKT":
            return now
        if order.fill_due is not None:
            moments.append(order.fill_due)
        if order.timeinforce > 0:
            moments.append(order.tif_from + order.timeinforce)
    elif order.status == OPEN:
        if order.take_profit > 0 or order.stop_loss > 0:
            return now
        if order.close_due is not None:
            moments.append(order.close_due)
        if order.holdtime > 0 and order.filled is not None:
            moments.append(max(order.filled + order.holdtime, order.holdtime_set))
    return min(moments, default=None)
