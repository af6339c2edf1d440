"""What a strategy sees on each tick (``ctx``), and the optional ``Decision`` it may return.

Strategies import from here, never from :mod:`multirun.account.worker`: the worker builds a
:class:`StrategyContext` around its client and journal and hands it to ``on_tick``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from multirun.api.models import Bar, Quote
from multirun.config.specs import AccountSpec
from multirun.strategies import Signal


@dataclass(frozen=True)
class Decision:
    """A signal plus how to reach it.

    ``fresh=True`` asks for a new trade even when one on the same side is already
    open: every trade we hold is closed first, then one ``volume`` trade opened on
    ``signal``'s side. The built-in ``random`` strategy uses it to behave exactly like
    ALGOGENE's example script (close everything every tick, then maybe open).
    A plain ``Signal`` (or its name) means "be in this position" and trades only
    when the position differs.
    """

    signal: Signal | None
    fresh: bool = False

    @classmethod
    def of(cls, value: object) -> Decision:
        """Whatever ``on_tick`` returned, as a Decision (raises StrategyError if invalid)."""
        if isinstance(value, Decision):  # its signal may be a name, as in Decision("BUY")
            return cls(Signal.parse(value.signal), value.fresh)
        return cls(Signal.parse(value))


@dataclass(frozen=True)
class OpenTrade:
    """One of our trades that is (or was just acknowledged as) open."""

    order_ref: str
    trade_id: str
    instrument: str
    side: str  # BUY or SELL
    volume: float

    @property
    def signed_volume(self) -> float:
        return self.volume if self.side == "BUY" else -self.volume


@dataclass
class StrategyContext:
    """The ``ctx`` passed to ``on_tick``.

    - ``spec``: the account (instrument, volume, interval...); ``params``: its params.
    - ``price()``: the instrument's realtime quote; ``history(interval, count)``: bars.
    - ``open_trades``: our open trades; ``position``: their net signed volume.
    - ``state``: a dict persisted in the journal after every tick (JSON values only).
    - ``log``: a logger named after the account.
    - ``tick_utc``: the grid time of this tick.
    """

    spec: AccountSpec
    state: dict[str, Any]
    log: logging.Logger
    tick_utc: datetime
    open_trades: Sequence[OpenTrade]
    _quote: Callable[[str], Quote]
    _history: Callable[[str, str, int], list[Bar]]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> Mapping[str, Any]:
        return self.spec.params

    @property
    def instrument(self) -> str:
        return self.spec.instrument

    @property
    def position(self) -> float:
        return sum(t.signed_volume for t in self.open_trades if t.instrument == self.instrument)

    def price(self, symbol: str | None = None) -> Quote:
        """The realtime quote of ``symbol`` (default: the account's instrument)."""
        return self._quote(symbol or self.instrument)

    def history(self, interval: str, count: int, instrument: str | None = None) -> list[Bar]:
        """The last ``count`` bars of ``interval`` (API names: M, M5, H...), oldest first."""
        return self._history(instrument or self.instrument, interval, count)
