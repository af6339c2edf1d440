"""The market-data endpoints (no token needed): quotes, candles, instruments."""

from __future__ import annotations

from multirun.sim import params as p
from multirun.sim.clock import SimClock, parse_ts
from multirun.sim.market import INSTRUMENTS, INTERVALS, Market
from multirun.sim.params import ApiFail, Params

MAX_BARS = 1000


def _instrument(params: Params, name: str) -> str:
    symbol = p.text(params, name, required=True).upper()
    if symbol not in INSTRUMENTS:
        raise ApiFail(400, f"unknown instrument: {symbol}")
    return symbol


def realtime_price(market: Market, clock: SimClock, params: Params) -> dict[str, object]:
    raw = p.text(params, "symbols", required=True)
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    unknown = [s for s in symbols if s not in INSTRUMENTS]
    if not symbols or unknown:
        raise ApiFail(400, f"unknown symbol(s): {', '.join(unknown) or raw}")
    now = clock.now()
    res = {s: market.realtime(s, now) for s in dict.fromkeys(symbols)}
    return {"count": len(res), "res": res}


def history_price(market: Market, clock: SimClock, params: Params) -> dict[str, object]:
    symbol = _instrument(params, "instrument")
    interval = p.text(params, "interval", required=True).upper()
    if interval not in INTERVALS:
        raise ApiFail(400, f"invalid parameter: interval must be one of {', '.join(INTERVALS)}")
    count = p.number(params, "count", required=True, positive=True)
    if count is None or count != int(count) or not 1 <= count <= MAX_BARS:
        raise ApiFail(400, f"invalid parameter: count must be an integer from 1 to {MAX_BARS}")
    now = clock.now()
    before = now
    if p.present(params, "timestamp"):
        before = min(now, _timestamp(params))
    bars = market.history(symbol, interval, int(count), before)
    return {"count": len(bars), "res": bars}


def _timestamp(params: Params) -> float:
    try:
        when = parse_ts(p.text(params, "timestamp"))
    except ValueError:
        raise ApiFail(400, "invalid parameter: timestamp must be YYYY-MM-DD hh:mm:ss") from None
    if when < 0:  # bars far enough before it would fall before year 1: no such dates
        raise ApiFail(400, "invalid parameter: timestamp must not be before 1970-01-01")
    return when


def list_instrument(market: Market, clock: SimClock, params: Params) -> dict[str, object]:
    symbols = market.symbols()
    return {"count": len(symbols), "res": symbols}


def meta_instrument(market: Market, clock: SimClock, params: Params) -> dict[str, object]:
    return {"res": market.meta(_instrument(params, "instrument"))}
