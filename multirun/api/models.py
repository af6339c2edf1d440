"""Typed results of the ALGOGENE API, as the client returns them.

Field names are ours (snake_case); the ``*_from_api`` parsers below map the API's
own spellings (``trade_ID``, ``order_Ref``, ``available_Balance``...) onto them.
Trade ids are always strings: the API returns them as numbers in one reply and
as strings in another, so we compare them as strings.
"""

from __future__ import annotations

import math
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
class Transaction:
    """One row of ``/strategy_trade``: a past transaction of the account.

    Documented fields only (``trade_ID``, ``price``, ``volume``, ``timestamp``, the order
    reference spelled ``order_ref`` or ``order_Ref``); ``action`` is whatever the row says
    of opening or closing (``action``, ``status``, ``type`` or ``openclose``, "" when it says
    nothing), kept as text because its spelling is not documented.
    """

    trade_id: str
    order_ref: str
    price: float
    volume: float
    timestamp: str
    action: str = ""
    realized_pl: float | None = None  # ``realizedPL`` where the row gives it (closes)

    @property
    def closes(self) -> bool:
        """Whether the row says, in its own words, that it closes the trade."""
        return "CLOS" in self.action.upper()


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


# --- parsing the API's replies -------------------------------------------------
#
# Each ``*_from_api`` takes one decoded JSON object as the API spells it and returns
# our type, or raises :class:`ReplyError` naming the field that is missing or of the
# wrong type (never its value: a reply may echo what we sent). The transport turns
# ReplyError into ProtocolError with the endpoint's name.

API_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class ReplyError(ValueError):
    """A reply object lacks a field or has one of the wrong type."""


def _field(obj: object, key: str) -> object:
    if not isinstance(obj, dict):
        raise ReplyError(f"expected an object, got {type(obj).__name__}")
    if key not in obj or obj[key] is None:
        raise ReplyError(f"missing field {key!r}")
    return obj[key]


def req_str(obj: object, key: str) -> str:
    """A required string field."""
    value = _field(obj, key)
    if not isinstance(value, str):
        raise ReplyError(f"field {key!r} is {type(value).__name__}, expected a string")
    return value


def opt_str(obj: dict, key: str, default: str = "") -> str:
    """An optional string field (``default`` when absent or null)."""
    return req_str(obj, key) if obj.get(key) is not None else default


def req_id(obj: object, key: str) -> str:
    """A required id: a string, or an integer (``tradeID`` is a number in some replies)."""
    value = _field(obj, key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ReplyError(f"field {key!r} is {type(value).__name__}, expected an id")
    text = str(value).strip()
    if not text:
        raise ReplyError(f"field {key!r} is empty")
    return text


def opt_ref(obj: dict, key: str) -> str:
    """An optional orderRef: free text we choose, but a trade another tool placed on the
    account may carry a number; as a string, so it compares like ours ("" when absent)."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return opt_str(obj, key)


def req_num(obj: object, key: str) -> float:
    """A required finite number (int or float; bools, strings, and the NaN and Infinity
    Python's json module accepts, are refused)."""
    value = _field(obj, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplyError(f"field {key!r} is {type(value).__name__}, expected a number")
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond a float's range
        number = math.inf
    if not math.isfinite(number):
        raise ReplyError(f"field {key!r} is not a finite number")
    return number


def opt_num(obj: dict, key: str, default: float = 0.0) -> float:
    """An optional number (``default`` when absent, null or an empty string)."""
    if obj.get(key) is None or obj.get(key) == "":
        return default
    return req_num(obj, key)


def req_side(obj: object, key: str) -> int:
    """``buysell``: 1/-1 (as listings send it) or BUY/SELL; returns 1 or -1."""
    value = _field(obj, key)
    if isinstance(value, str) and value.upper() in ("BUY", "SELL"):
        return 1 if value.upper() == "BUY" else -1
    if not isinstance(value, bool) and isinstance(value, int | float) and value in (1, -1):
        return int(value)
    raise ReplyError(f"field {key!r} is not 1, -1, BUY or SELL")


def req_list(obj: object, key: str) -> list:
    value = _field(obj, key)
    if not isinstance(value, list):
        raise ReplyError(f"field {key!r} is {type(value).__name__}, expected a list")
    return value


def req_dict(obj: object, key: str) -> dict:
    value = _field(obj, key)
    if not isinstance(value, dict):
        raise ReplyError(f"field {key!r} is {type(value).__name__}, expected an object")
    return value


API_TIME_PATTERNS = (
    API_TS_FORMAT, "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"
)  # fmt: skip


def parse_api_time(text: str, key: str = "expired_utc") -> datetime:
    """The API's ``YYYY-MM-DD hh:mm:ss[.ffffff]`` UTC timestamp as a naive UTC datetime."""
    for pattern in API_TIME_PATTERNS:
        try:
            return datetime.strptime(text.strip(), pattern)
        except ValueError:
            continue
    raise ReplyError(f"field {key!r} is not a timestamp")


def token_from_api(reply: object) -> Token:
    """``/session``: ``{"res": {"token", "expired_utc"}}``."""
    res = req_dict(reply, "res")
    value = req_str(res, "token")
    if not value:
        raise ReplyError("field 'token' is empty")
    return Token(value, parse_api_time(req_str(res, "expired_utc")))


def trade_from_api(obj: object) -> Trade:
    """One entry of ``/opened_trades`` or ``/pending_trades``."""
    if not isinstance(obj, dict):
        raise ReplyError(f"trade is {type(obj).__name__}, expected an object")
    instrument = opt_str(obj, "instrument") or req_str(obj, "symbol")
    return Trade(
        trade_id=req_id(obj, "trade_ID"),
        order_ref=opt_ref(obj, "order_Ref"),
        instrument=instrument,
        buysell=req_side(obj, "buysell"),
        volume=req_num(obj, "volume"),
        price=req_num(obj, "price"),
        timestamp=opt_str(obj, "timestamp"),
        take_profit=opt_num(obj, "takeProfitLevel"),
        stop_loss=opt_num(obj, "stopLossLevel"),
        holdtime=opt_num(obj, "holdtime"),
        unrealized_pl=opt_num(obj, "unrealizedPL"),
    )


def trades_from_api(reply: object) -> list[Trade]:
    """``{"count": n, "res": [trade, ...]}``."""
    return [trade_from_api(item) for item in req_list(reply, "res")]


def ack_from_api(reply: object, order_ref: str) -> OrderAck:
    """``/open_order``: ``{"status", "timestamp_utc", "tradeID": <number>}``."""
    if not isinstance(reply, dict):
        raise ReplyError(f"expected an object, got {type(reply).__name__}")
    return OrderAck(
        trade_id=req_id(reply, "tradeID"),
        status=req_str(reply, "status"),
        timestamp=opt_str(reply, "timestamp_utc"),
        order_ref=order_ref,
    )


def _one(reply: object) -> dict:
    """The single object of a reply: under ``res`` (object or one-item list) or top level."""
    if not isinstance(reply, dict):
        raise ReplyError(f"expected an object, got {type(reply).__name__}")
    res = reply.get("res")
    if isinstance(res, dict):
        return res
    if isinstance(res, list):
        if len(res) != 1:
            raise ReplyError(f"field 'res' has {len(res)} items, expected 1")
        if not isinstance(res[0], dict):
            raise ReplyError("field 'res' holds no object")
        return res[0]
    return reply


def order_status_from_api(reply: object) -> OrderStatus:
    """``/query_order``: one order, at the top level or under ``res``."""
    obj = _one(reply)
    return OrderStatus(
        trade_id=req_id(obj, "tradeID" if "tradeID" in obj else "trade_ID"),
        status=req_str(obj, "status"),
        order_ref=opt_ref(obj, "orderRef") or opt_ref(obj, "order_Ref"),
        instrument=opt_str(obj, "instrument") or opt_str(obj, "symbol"),
        buysell=req_side(obj, "buysell"),
        volume=req_num(obj, "volume"),
        price=opt_num(obj, "price"),
        err_msg=opt_str(obj, "err_msg"),
    )


def balance_from_api(reply: object) -> Balance:
    """``/balance``: the fields at the top level or under ``res``."""
    obj = _one(reply)
    return Balance(
        nav=req_num(obj, "NAV"),
        available_balance=req_num(obj, "available_Balance"),
        margin_used=opt_num(obj, "margin_Used"),
        realized_pl=opt_num(obj, "realized_PL"),
        unrealized_pl=opt_num(obj, "unrealized_PL"),
        timestamp=opt_str(obj, "timestamp"),
        base_currency=opt_str(obj, "BaseCurrency"),
    )


def positions_from_api(reply: object) -> list[Position]:
    """``/positions``: ``{"res": {SYMBOL: {"netVolume", "MarketValue", "LastTradeTime"}}}``."""
    res = _field(reply, "res")
    if isinstance(res, list) and not res:
        return []  # an empty mapping may come back as an empty list
    if not isinstance(res, dict):
        raise ReplyError(f"field 'res' is {type(res).__name__}, expected an object")
    out = []
    for symbol, item in res.items():
        if not isinstance(item, dict):
            raise ReplyError(f"position {symbol!r} is not an object")
        volume = opt_num(item, "netVolume") if "netVolume" in item else req_num(item, "Position")
        out.append(
            Position(
                symbol=str(symbol),
                net_volume=volume,
                market_value=opt_num(item, "MarketValue"),
                last_trade_time=opt_str(item, "LastTradeTime"),
            )
        )
    return out


def accounts_from_api(reply: object) -> list[AccountInfo]:
    """``/accounts``: ``{"count": n, "res": [{"accountid", "runmode", "NAV", ...}]}``."""
    out = []
    for item in req_list(reply, "res"):
        if not isinstance(item, dict):
            raise ReplyError("account entry is not an object")
        trading = item.get("isTrading", True)
        out.append(
            AccountInfo(
                accountid=req_id(item, "accountid"),
                runmode=req_str(item, "runmode"),
                nav=req_num(item, "NAV"),
                available_balance=opt_num(item, "availableBalance"),
                is_trading=bool(trading) if not isinstance(trading, str) else trading != "0",
            )
        )
    return out


def quotes_from_api(reply: object) -> dict[str, Quote]:
    """``/realtime_price``: ``{"res": {SYMBOL: {"timestamp", "bidPrice", "askPrice", ...}}}``."""
    res = req_dict(reply, "res")
    out = {}
    for symbol, item in res.items():
        if not isinstance(item, dict):
            raise ReplyError(f"quote {symbol!r} is not an object")
        out[str(symbol)] = Quote(
            symbol=str(symbol),
            timestamp=opt_str(item, "timestamp"),
            bid=req_num(item, "bidPrice"),
            ask=req_num(item, "askPrice"),
            bid_size=opt_num(item, "bidSize"),
            ask_size=opt_num(item, "askSize"),
        )
    return out


def bars_from_api(reply: object) -> list[Bar]:
    """``/history_price``: ``{"res": [{"t", "o", "h", "l", "c", "v", ...}]}``, ascending."""
    out = []
    for item in req_list(reply, "res"):
        if not isinstance(item, dict):
            raise ReplyError("bar is not an object")
        out.append(
            Bar(
                t=req_str(item, "t"),
                open=req_num(item, "o"),
                high=req_num(item, "h"),
                low=req_num(item, "l"),
                close=req_num(item, "c"),
                volume=opt_num(item, "v"),
            )
        )
    return out


def transaction_from_api(obj: object) -> Transaction:
    """One entry of ``/strategy_trade``."""
    if not isinstance(obj, dict):
        raise ReplyError(f"transaction is {type(obj).__name__}, expected an object")
    action = next((str(obj[k]) for k in ("action", "status", "type", "openclose")
                   if isinstance(obj.get(k), str)), "")  # fmt: skip
    return Transaction(
        trade_id=req_id(obj, "trade_ID"),
        order_ref=opt_ref(obj, "order_ref") or opt_ref(obj, "order_Ref"),
        price=opt_num(obj, "price"),
        volume=opt_num(obj, "volume"),
        timestamp=opt_str(obj, "timestamp"),
        action=action,
        realized_pl=None if obj.get("realizedPL") in (None, "") else req_num(obj, "realizedPL"),
    )


def transactions_from_api(reply: object) -> list[Transaction]:
    """``{"count": n, "res": [transaction, ...]}``, in the server's (ascending) order."""
    return [transaction_from_api(item) for item in req_list(reply, "res")]


def closed_trade_ids(rows: list[Transaction]) -> set[str]:
    """Trade ids the history shows closed: a row that says it closes, or a second row
    for the same trade (its open, then its close)."""
    seen: set[str] = set()
    closed: set[str] = set()
    for row in rows:
        if row.closes or row.trade_id in seen:
            closed.add(row.trade_id)
        seen.add(row.trade_id)
    return closed


def prepare_time_parsing() -> None:
    """Build what parsing the API's times needs, once: ``strptime`` imports ``_strptime``
    and compiles a regular expression per pattern on first use, about 1.3 MiB of memory.
    The supervisor calls this before forking, so its workers share it instead of each
    building its own."""
    sample = datetime(2026, 1, 2, 3, 4, 5, 6)
    for pattern in API_TIME_PATTERNS:
        datetime.strptime(sample.strftime(pattern), pattern)
