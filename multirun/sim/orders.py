"""Orders and accounts as the simulator keeps them, and their API reply shapes."""

from __future__ import annotations

from dataclasses import dataclass, field

from multirun.sim.clock import fmt_ts
from multirun.sim.market import INSTRUMENTS

PENDING, OPEN, CLOSED, CANCELLED = "PENDING", "OPEN", "CLOSED", "CANCELLED"
# our ledger status -> the status /query_order reports
_QUERY_STATUS = {PENDING: "PENDING", OPEN: "FILLED", CLOSED: "FILLED", CANCELLED: "CANCELLED"}


@dataclass
class Order:
    trade_id: int
    user: str
    runmode: str
    accountid: str
    order_ref: str
    instrument: str
    buysell: int
    volume: float
    ordertype: str  # MKT | LMT | STOP
    received: float
    price: float = 0.0  # limit/stop price
    timeinforce: float = 0.0
    tif_from: float = 0.0
    take_profit: float = 0.0
    stop_loss: float = 0.0
    holdtime: float = 0.0
    holdtime_set: float = 0.0  # when holdtime was last given: it closes no earlier
    callback: str = ""
    expiry: str = ""
    right: str = ""
    strike: float = 0.0
    status: str = PENDING
    fill_due: float | None = None  # market orders: when they fill
    filled: float | None = None
    fill_price: float | None = None
    close_due: float | None = None  # a requested close: when it executes
    closed: float | None = None
    close_price: float | None = None
    close_reason: str = ""
    realized_pl: float = 0.0  # in whole cents (rounded to 2 decimals) once closed

    @property
    def account_key(self) -> tuple[str, str, str]:
        return (self.user, self.runmode, self.accountid)

    def trade_reply(self, unrealized: float) -> dict[str, object]:
        """The trade as /opened_trades and /pending_trades list it."""
        inst = INSTRUMENTS[self.instrument]
        opened = self.status == OPEN
        reply: dict[str, object] = {
            "broker": "ALGOGENE",
            "buysell": self.buysell,
            "channel": "api",
            "expiry": self.expiry,
            "holdtime": self.holdtime,
            "instrument": self.instrument,
            "market": inst.market,
            "openclose": "open",
            "order_Ref": self.order_ref,
            "price": self.fill_price if opened else self.price,
            "product_type": inst.producttype,
            "right": self.right,
            "stopLossLevel": self.stop_loss,
            "strike": self.strike,
            "symbol": self.instrument,
            "takeProfitLevel": self.take_profit,
            "timestamp": fmt_ts(self.filled if opened and self.filled else self.received),
            "trade_ID": str(self.trade_id),
            "unrealizedPL": round(unrealized, 2),
            "volume": self.volume,
        }
        if not opened:
            reply["timeinforce"] = self.timeinforce
        return reply

    def query_reply(self) -> dict[str, object]:
        """The order as /query_order reports it."""
        status = _QUERY_STATUS[self.status]
        filled = self.fill_price is not None
        return {
            "status": status,
            "err_msg": self.close_reason if self.status == CANCELLED else "",
            "tradeID": self.trade_id,
            "orderRef": self.order_ref,
            "buysell": self.buysell,
            "price": self.fill_price if filled else self.price,
            "volume": self.volume,
            "timestamp": fmt_ts(self.filled if self.filled else self.received),
            "takeProfitLevel": self.take_profit,
            "stopLossLevel": self.stop_loss,
            "holdtime": self.holdtime,
            "trailingstop": 0.0,
            "timeinforce": self.timeinforce,
            "instrument": self.instrument,
            "symbol": self.instrument,
            "expiry": self.expiry,
            "right": self.right,
            "strike": self.strike,
        }

    def ledger_entry(self) -> dict[str, object]:
        """The order as GET /sim/ledger shows it."""
        return {
            "tradeID": self.trade_id,
            "user": self.user,
            "runmode": self.runmode,
            "accountid": self.accountid,
            "orderRef": self.order_ref,
            "instrument": self.instrument,
            "buysell": self.buysell,
            "volume": self.volume,
            "ordertype": self.ordertype,
            "price": self.price,
            "timeinforce": self.timeinforce,
            "takeProfitLevel": self.take_profit,
            "stopLossLevel": self.stop_loss,
            "holdtime": self.holdtime,
            "status": self.status,
            "received_utc": fmt_ts(self.received),
            "filled_utc": _ts_or_none(self.filled),
            "fill_price": self.fill_price,
            "closed_utc": _ts_or_none(self.closed),
            "close_price": self.close_price,
            "close_reason": self.close_reason,
            "realized_pl": round(self.realized_pl, 2),
        }


@dataclass
class Account:
    user: str
    runmode: str
    accountid: str
    initial: float  # the starting cash (USD), deposited when the account was first used
    opened: float = 0.0  # when that was
    # Realized P&L in whole cents: the sum of the trades' rounded realizedPL, so that every
    # total (/balance, /strategy_pl, /strategy_stats) equals the sum of the listed trades.
    realized_cents: int = 0
    updated: float = 0.0
    order_ids: list[int] = field(default_factory=list)  # every order, oldest first
    live: dict[int, Order] = field(default_factory=dict)  # pending and open ones

    @property
    def realized_pl(self) -> float:
        return self.realized_cents / 100

    @property
    def cash(self) -> float:
        """The starting cash plus the realized P&L."""
        return self.initial + self.realized_pl


def _ts_or_none(t: float | None) -> str | None:
    return None if t is None else fmt_ts(t)
