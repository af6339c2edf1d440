"""``sma_cross``: long when the fast moving average is above the slow one, short below.

On each tick it fetches the last ``slow`` bars of ``interval`` through
``history_price`` and compares the simple moving averages of their closes:
fast > slow -> BUY, fast < slow -> SELL, equal or too few bars -> FLAT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from multirun.strategies import Signal
from multirun.strategies.context import StrategyContext

# history_price intervals (ALGOGENE's names).
INTERVALS = (
    "T", "S", "S5", "S10", "S15", "S30", "M", "M2", "M5", "M10", "M15", "M30",
    "H", "H2", "H3", "H4", "H6", "H12", "D",
)  # fmt: skip


class SmaCross:
    params_schema: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "fast": {"type": "integer", "minimum": 1, "maximum": 999, "default": 5},
            "slow": {"type": "integer", "minimum": 2, "maximum": 1000, "default": 20},
            "interval": {"enum": list(INTERVALS), "default": "M"},
        },
        "additionalProperties": False,
    }

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = params or {}
        self.fast = int(params.get("fast", 5))
        self.slow = int(params.get("slow", 20))
        self.interval = str(params.get("interval", "M"))
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"fast ({self.fast}) must be at least 1 and below slow ({self.slow})")
        if self.interval not in INTERVALS:
            raise ValueError(f"interval {self.interval!r} is not one of {', '.join(INTERVALS)}")

    def on_tick(self, ctx: StrategyContext) -> Signal:
        closes = [bar.close for bar in ctx.history(self.interval, self.slow)]
        return self.signal(closes)

    def signal(self, closes: Sequence[float]) -> Signal:
        if len(closes) < self.slow:
            return Signal.FLAT
        fast = _mean(closes[-self.fast :])
        slow = _mean(closes[-self.slow :])
        if fast > slow:
            return Signal.BUY
        if fast < slow:
            return Signal.SELL
        return Signal.FLAT


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
