"""Typed results of the ALGOGENE API, as the client returns them.

Field names are ours (snake_case); :mod:`multirun.client` maps the API's own
spellings (``trade_ID``, ``order_Ref``, ``available_Balance``...) onto them.
Trade ids are always strings: the API returns them as numbers in one reply and
as strings in another, so we compare them as strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Token:
    """A session token and when the server says it expires (UTC, naive)."""

    value: str
    expires_utc: datetime

    def __repr__(self) -> str:
        return f"Token(value='****', expires_utc={self.expires_utc.isoformat()})"


@dataclass(frozen=True)
class Trade:
    """An opened or pending trade, as ``/opened_trades`` and ``/pending_trades`` list it."""

    trade_id: str
    order_ref: str
    instrument: str
    buysell: int  # 1 buy, -1 sell
    volume: float
    price: float
    timestamp: str
    take_profit: float = 0.0
    stop_loss: float = 0.0
    holdtime: float = 0.0
    unrealized_pl: float = 0.0

    @property
    def side(self) -> str:
        return "BUY" if self.buysell > 0 else "SELL"


@dataclass(frozen=True)
class OrderAck:
    """The server's acknowledgement of ``/open_order``."""

    trade_id: str
    status: str  # PENDING_TO_FILL
    timestamp: str
    order_ref: str


@dataclass(frozen=True)
class OrderStatus:
    """One order, as ``/query_order`` reports it."""

    trade_id: str
    status: str  # PENDING, FILLED, PARTIAL_FILLED
    order_ref: str
    instrument: str
    buysell: int
    volume: float
    price: float
    err_msg: str = ""


@dataclass(frozen=True)
class Quote:
    symbol: str
    timestamp: str
    bid: float
    ask: float
    bid_size: float = 0.0
    ask_size: float = 0.0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True)
class Bar:
    """One ``/history_price`` candle; ``close`` is the mid close (the API's ``c``)."""

    t: str
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


@dataclass(frozen=True)
class Balance:
    nav: float
    available_balance: float
    margin_used: float
    realized_pl: float
    unrealized_pl: float
    timestamp: str = ""
    base_currency: str = ""


@dataclass(frozen=True)
class Position:
    symbol: str
    net_volume: float
    market_value: float = 0.0
    last_trade_time: str = ""


@dataclass(frozen=True)
class AccountInfo:
    accountid: str
    runmode: str
    nav: float
    available_balance: float
    is_trading: bool = True
