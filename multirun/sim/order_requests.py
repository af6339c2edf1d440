"""Order requests: a new order read from its parameters, and the updates an order takes.

Every parameter is read (and so checked) before anything changes: a 400 reply
(:class:`~multirun.sim.params.ApiFail`) leaves the order as it was.
"""

from __future__ import annotations

from multirun.sim import params as p
from multirun.sim.clock import SimClock
from multirun.sim.market import INSTRUMENTS
from multirun.sim.orders import Account, Order
from multirun.sim.params import ApiFail, Params

ORDER_TYPES = ("MKT", "LMT", "STOP")


def new_order(account: Account, params: Params, clock: SimClock, fill_delay_s: float) -> Order:
    """The order ``params`` ask ``account`` for, not yet accepted (its trade id is 0)."""
    instrument = p.text(params, "instrument", required=True).upper()
    if instrument not in INSTRUMENTS:
        raise ApiFail(400, f"unknown instrument: {instrument}")
    side = p.buysell(params)
    volume = p.number(params, "volume", required=True, positive=True)
    ordertype = p.text(params, "ordertype", required=True).upper()
    if ordertype not in ORDER_TYPES:
        raise ApiFail(400, "invalid parameter: ordertype must be MKT, LMT or STOP")
    price = p.number(params, "price", positive=ordertype != "MKT")
    if ordertype != "MKT" and price is None:
        raise ApiFail(400, f"missing parameter: price (required for {ordertype})")
    now = clock.now()
    order = Order(
        trade_id=0,  # assigned once the order is accepted
        user=account.user,
        runmode=account.runmode,
        accountid=account.accountid,
        order_ref=p.text(params, "orderRef"),
        instrument=instrument,
        buysell=side,
        volume=float(volume or 0.0),
        ordertype=ordertype,
        received=now,
        price=float(price or 0.0) if ordertype != "MKT" else 0.0,
        timeinforce=p.number(params, "timeinforce") or 0.0,
        tif_from=now,
        expiry=p.text(params, "expiry"),
        right=p.text(params, "right"),
        strike=p.number(params, "strike") or 0.0,
        fill_due=now + fill_delay_s if ordertype == "MKT" else None,
    )
    apply_updates(order, params, clock)
    return order


def apply_updates(order: Order, params: Params, clock: SimClock) -> None:
    """takeProfitLevel, stopLossLevel, holdtime, orderRef, callback when given."""
    tp = p.number(params, "takeProfitLevel")
    sl = p.number(params, "stopLossLevel")
    hold = p.number(params, "holdtime")
    # read (and so check) every parameter before changing anything: a 400 changes nothing
    ref, callback = p.text(params, "orderRef"), p.text(params, "callback")
    if tp is not None:
        order.take_profit = tp
    if sl is not None:
        order.stop_loss = sl
    if hold is not None:
        order.holdtime, order.holdtime_set = hold, clock.now()
    if p.present(params, "orderRef"):
        order.order_ref = ref
    if p.present(params, "callback"):
        order.callback = callback
