"""Planning a tick's orders: what to close and what to open to reach a decision's target.

Pure, so it is easy to test: :mod:`multirun.account.worker` carries a :class:`OrderPlan` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from multirun.account.journal.store import JournalOrder
from multirun.strategies import Signal
from multirun.strategies.context import Decision, OpenTrade


@dataclass(frozen=True)
class OrderPlan:
    """The orders that move our trades to a decision's target."""

    close: tuple[OpenTrade, ...] = ()
    open_side: str | None = None

    @property
    def empty(self) -> bool:
        return not self.close and self.open_side is None


def plan_orders(decision: Decision, trades: Sequence[OpenTrade], instrument: str) -> OrderPlan:
    """Close opposite (and, for a fresh decision, all) trades; open one if not already there.

    Trades on another instrument (the account's instrument was changed) are never the
    target: any decision other than "no change" closes them.
    """
    signal_ = decision.signal
    if signal_ is None:
        return OrderPlan()
    if signal_ is Signal.FLAT:
        return OrderPlan(close=tuple(trades))
    side = signal_.value
    keep = [
        t for t in trades if t.instrument == instrument and t.side == side and not decision.fresh
    ]
    close = tuple(t for t in trades if t not in keep)
    return OrderPlan(close=close, open_side=None if keep else side)


def open_trade(row: JournalOrder) -> OpenTrade:
    """A journaled trade of ours, as the strategy sees it."""
    return OpenTrade(row.order_ref, row.trade_id or "", row.instrument, row.side, row.volume)
