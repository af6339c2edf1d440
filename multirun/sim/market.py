"""Seeded, reproducible prices for the simulator's instruments.

A price is a pure function of (seed, instrument, time): the log price is a sum of
value-noise layers at time scales 1 s, 2 s, 4 s ... ~48 days, each layer linearly
interpolated between hashed lattice points. So any past bar can be computed on
demand, the same every time, and history never changes once generated. Tests and
the ``/sim/price`` control can *pin* an instrument's mid from a moment on (a
multiplicative factor applied from that time forward), which leaves older bars as
they were.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

from multirun.sim.clock import fmt_bar, fmt_ts

_MASK = (1 << 64) - 1
_TOP_LEVEL = 22  # 2**22 s ~ 48 days: the slowest layer
_SECONDS_PER_YEAR = 365.0 * 86400.0

INTERVALS: dict[str, int] = {
    "T": 1, "S": 1, "S5": 5, "S10": 10, "S15": 15, "S30": 30,
    "M": 60, "M2": 120, "M5": 300, "M10": 600, "M15": 900, "M30": 1800,
    "H": 3600, "H2": 7200, "H3": 10800, "H4": 14400, "H6": 21600, "H12": 43200,
    "D": 86400,
}  # fmt: skip


@dataclass(frozen=True)
class Instrument:
    symbol: str
    market: str
    producttype: str
    base_price: float
    annual_vol: float
    spread: float
    decimals: int
    contract_size: float
    settle_currency: str
    margin_rate: float
    description: str


_DESCRIPTIONS = {
    "BTCUSD": "Bitcoin vs US Dollar",
    "ETHUSD": "Ether vs US Dollar",
    "EURUSD": "Euro vs US Dollar",
    "GBPUSD": "British Pound vs US Dollar",
    "AUDUSD": "Australian Dollar vs US Dollar",
    "USDJPY": "US Dollar vs Japanese Yen",
    "ZARJPY": "South African Rand vs Japanese Yen",
    "XAUUSD": "Gold vs US Dollar",
    "SPXUSD": "US SPX 500 Index CFD",
    "HKXHKD": "Hong Kong 50 Index CFD",
    "AAPL": "Apple Inc.",
}

# symbol, market, producttype, price, annual vol, spread, decimals, contract size,
# settle currency, margin rate
_TABLE = (
    ("BTCUSD", "CRYPTO", "SPOT", 30000.0, 0.60, 36.0, 2, 1.0, "USD", 0.5),
    ("ETHUSD", "CRYPTO", "SPOT", 1800.0, 0.70, 1.6, 2, 1.0, "USD", 0.5),
    ("EURUSD", "FX", "SPOT", 1.085, 0.08, 0.0001, 5, 100000.0, "USD", 0.02),
    ("GBPUSD", "FX", "SPOT", 1.27, 0.09, 0.00012, 5, 100000.0, "USD", 0.02),
    ("AUDUSD", "FX", "SPOT", 0.65, 0.10, 0.00012, 5, 100000.0, "USD", 0.02),
    ("USDJPY", "FX", "SPOT", 145.5, 0.09, 0.012, 3, 100000.0, "JPY", 0.02),
    ("ZARJPY", "FX", "SPOT", 7.8, 0.15, 0.02, 3, 100000.0, "JPY", 0.05),
    ("XAUUSD", "METAL", "SPOT", 1940.0, 0.15, 0.3, 2, 100.0, "USD", 0.05),
    ("SPXUSD", "INDEX", "CFD", 4500.0, 0.18, 0.5, 2, 1.0, "USD", 0.05),
    ("HKXHKD", "INDEX", "CFD", 18000.0, 0.22, 2.0, 1, 1.0, "HKD", 0.05),
    ("AAPL", "STOCK", "SPOT", 185.0, 0.25, 0.02, 2, 1.0, "USD", 0.2),
)

INSTRUMENTS: dict[str, Instrument] = {
    row[0]: Instrument(*row, description=_DESCRIPTIONS[row[0]]) for row in _TABLE
}


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unit(h: int) -> float:
    """A hash as a float in [0, 1)."""
    return (h >> 11) / float(1 << 53)


@lru_cache(maxsize=1 << 17)
def _lattice(key: int, level: int, index: int) -> float:
    """The noise value in [-1, 1] of one lattice point of one layer."""
    return 2.0 * _unit(_mix(key ^ _mix((level << 48) ^ (index & ((1 << 48) - 1))))) - 1.0


class Market:
    """Quotes and candles for every instrument, a pure function of seed and time."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._keys = {s: _mix(_mix(seed & _MASK) ^ _stable_hash(s)) for s in INSTRUMENTS}
        self._pins: dict[str, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        self._layers = {s: _layers(inst) for s, inst in INSTRUMENTS.items()}
        self._recent: dict[tuple[str, float, int], float] = {}  # repeated mids of one moment

    # --- prices ---------------------------------------------------------------

    def symbols(self) -> list[str]:
        return sorted(INSTRUMENTS)

    def walk(self, symbol: str, t: float, min_level: int = 0) -> float:
        """The unpinned mid at ``t``; layers finer than 2**min_level s are left out."""
        key = self._keys[symbol]
        log_move = 0.0
        for level, scale, amplitude in self._layers[symbol][min_level:]:
            pos = t / scale
            index = math.floor(pos)
            frac = pos - index
            a = _lattice(key, level, index)
            b = _lattice(key, level, index + 1)
            log_move += (a + (b - a) * frac) * amplitude
        return INSTRUMENTS[symbol].base_price * math.exp(log_move)

    def mid(self, symbol: str, t: float, min_level: int = 0) -> float:
        memo = (symbol, t, min_level)
        value = self._recent.get(memo)
        if value is None:
            value = self.walk(symbol, t, min_level) * self._factor(symbol, t)
            if len(self._recent) > 512:
                self._recent.clear()
            self._recent[memo] = value
        return value

    def quote(self, symbol: str, t: float) -> tuple[float, float]:
        """(bid, ask) at ``t``, rounded to the instrument's decimals."""
        inst = INSTRUMENTS[symbol]
        return _bid_ask(inst, self.mid(symbol, t))

    def pin(self, symbol: str, mid: float, t: float) -> None:
        """From ``t`` on, scale the walk so that the mid at ``t`` is ``mid``."""
        if mid <= 0:
            raise ValueError("mid must be > 0")
        factor = mid / self.walk(symbol, t)
        with self._lock:
            pins = [p for p in self._pins.get(symbol, []) if p[0] < t]
            pins.append((t, factor))
            self._pins[symbol] = pins
            self._recent.clear()

    def _factor(self, symbol: str, t: float) -> float:
        factor = 1.0
        for since, value in self._pins.get(symbol, ()):
            if since <= t:
                factor = value
        return factor

    # --- API replies ----------------------------------------------------------

    def realtime(self, symbol: str, t: float) -> dict[str, object]:
        inst = INSTRUMENTS[symbol]
        bid, ask = self.quote(symbol, t)
        tick = 10.0**-inst.decimals
        step = max(tick, round(inst.spread / 4, inst.decimals))
        key = self._keys[symbol] ^ int(t * 10)
        sizes = [round(1 + 99 * _unit(_mix(key + j)), 2) for j in range(10)]
        return {
            "timestamp": fmt_ts(t),
            "bidPrice": bid,
            "askPrice": ask,
            "bidSize": sizes[0],
            "askSize": sizes[5],
            "bidOrderBook": [[round(bid - j * step, inst.decimals), sizes[j]] for j in range(5)],
            "askOrderBook": [
                [round(ask + j * step, inst.decimals), sizes[j + 5]] for j in range(5)
            ],
        }

    def history(self, symbol: str, interval: str, count: int, before: float) -> list[dict]:
        """``count`` complete bars of ``interval`` ending at or before ``before``, ascending."""
        seconds = INTERVALS[interval]
        last_end = math.floor(before / seconds) * seconds
        first_start = last_end - count * seconds
        edges = [self.mid(symbol, first_start + i * seconds) for i in range(count + 1)]
        return [
            self._bar(symbol, first_start + i * seconds, seconds, edges[i], edges[i + 1])
            for i in range(count)
        ]

    def _bar(
        self, symbol: str, start: float, seconds: int, opening: float, closing: float
    ) -> dict[str, object]:
        inst = INSTRUMENTS[symbol]
        coarse = max(0, int(math.log2(max(1.0, seconds / 4))))
        inner = [self.mid(symbol, start + seconds * k / 5, coarse) for k in range(1, 5)]
        bid, ask = _bid_ask(inst, closing)
        volume = round(seconds * (0.5 + _unit(_mix(self._keys[symbol] ^ int(start)))), 2)
        d = inst.decimals
        return {
            "t": fmt_bar(start),
            "o": round(opening, d),
            "h": round(max(opening, closing, *inner), d),
            "l": round(min(opening, closing, *inner), d),
            "c": round(closing, d),
            "b": bid,
            "a": ask,
            "m": round((bid + ask) / 2, d + 1),
            "v": volume,
        }

    def meta(self, symbol: str) -> dict[str, object]:
        inst = INSTRUMENTS[symbol]
        return {
            "contractSize": inst.contract_size,
            "market": inst.market,
            "producttype": inst.producttype,
            "settleCurrency": inst.settle_currency,
            "description": inst.description,
        }

    def to_usd(self, currency: str, amount: float, t: float) -> float:
        """Convert an amount in ``currency`` to USD at ``t``."""
        if currency == "USD":
            return amount
        if currency == "JPY":
            return amount / self.mid("USDJPY", t)
        if currency == "HKD":
            return amount / 7.8
        return amount


def _layers(inst: Instrument) -> list[tuple[int, float, float]]:
    """(level, time scale in s, log-price amplitude) of every noise layer."""
    sigma = inst.annual_vol / math.sqrt(_SECONDS_PER_YEAR)
    return [
        (level, float(1 << level), sigma * math.sqrt(float(1 << level)) * 0.6)
        for level in range(_TOP_LEVEL + 1)
    ]


def _bid_ask(inst: Instrument, mid: float) -> tuple[float, float]:
    tick = 10.0**-inst.decimals
    bid = round(mid - inst.spread / 2, inst.decimals)
    ask = round(mid + inst.spread / 2, inst.decimals)
    if ask <= bid:
        ask = round(bid + tick, inst.decimals)
    return bid, ask


def _stable_hash(text: str) -> int:
    """A process-independent hash of a string (``hash()`` is salted per process)."""
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    return h
