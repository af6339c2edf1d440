"""``random``: ALGOGENE's example script as a strategy.

The seed script, every tick: closes its outstanding trade, then draws
``random.choice(["BUY", "SELL", ""])`` and opens one trade on that side (or none).
Here each tick returns

- ``Decision(BUY or SELL, fresh=True)``: close every trade we hold, then open one
  ``volume`` trade on that side, even if we were already on that side (the seed
  always closes and reopens); or
- ``FLAT`` for the empty draw: close everything, open nothing.

With ``params.seed`` the draws come from ``random.Random(seed)`` with the seed's list,
in the seed's order, so a given seed reproduces the same sequence of sides. The
number of draws made is kept in ``ctx.state``, so a restarted worker continues the
sequence instead of starting it again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from multirun.strategies import Signal
from multirun.strategies.context import Decision, StrategyContext

CHOICES = ("BUY", "SELL", "")  # exactly the seed's list: the same seed gives the same draws


class RandomStrategy:
    params_schema: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "seed": {
                "type": ["integer", "null"],
                "description": "Seed of the draws (reproducible runs); omit for random ones.",
            },
        },
        "additionalProperties": False,
    }

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.seed = (params or {}).get("seed")
        self._rng: random.Random | None = None

    def on_tick(self, ctx: StrategyContext) -> Decision | Signal:
        draws = int(ctx.state.get("draws", 0))
        rng = self._generator(draws)
        choice = rng.choice(CHOICES)
        ctx.state["draws"] = draws + 1
        if not choice:
            return Signal.FLAT
        return Decision(Signal[choice], fresh=True)

    def _generator(self, draws: int) -> random.Random:
        if self._rng is None:
            self._rng = random.Random(self.seed)
            if self.seed is not None:
                # Continue the seeded sequence where the previous run left it.
                for _ in range(draws):
                    self._rng.choice(CHOICES)
        return self._rng
