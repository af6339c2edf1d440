"""One account's money limits: its day's P&L and drawdown every tick, and what a breach is.

:class:`MoneyWatch` is told what the worker already knows, so a check costs no request and
no journal read per tick: the realized P&L of each close as
:class:`~multirun.account.pricing.Pricing` prices it (a running sum, read from the journal
once at start and once per day), the
unrealized P&L of each held trade in the server's listing read at the tick's start (the
sync every tick makes), and the server's ``/balance`` NAV when pricing samples it (at
most every :data:`~multirun.account.pricing.EQUITY_EVERY_S` seconds).

- **Day P&L**: realized P&L of the closes priced since the day's start (``risk.day_starts``,
  default 00:00 UTC) plus the unrealized P&L of what is held now.
- **Equity** (NAV estimate): the last sampled NAV, moved since by what our own P&L moved
  (None before the first sample). The sample is anchored on the server's own unrealized
  P&L in the same ``/balance`` reply: a trade opened in the tick, not listed yet, has no
  unrealized P&L of ours until the next tick, and must not shift the anchor.
- **Drawdown**: how far the equity estimate is below its peak since the worker's start or
  the last ``resume`` (before the first NAV sample, on our own P&L alone).

After a ``resume`` the day's loss counts from the day's P&L at that moment (when it was a
loss), as the supervisor's fleet limit does: a resume is not undone at the next tick; the
next day counts from zero again.

:class:`Pause` is a pause as the journal keeps it (``meta`` key ``pause``): why, since
when, until when it lifts by itself (a daily-loss pause: the next day's start), and
whether a flatten is still under way (a restarted worker goes on closing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from multirun.config.specs import DayStart, RiskSpec


@dataclass(frozen=True)
class Money:
    """What one tick knows of the account's money."""

    day_pnl: float  # realized since the day's start + unrealized now
    equity: float | None  # NAV estimate; None before the first /balance sample
    drawdown: float  # below the peak since start or resume (>= 0)


@dataclass(frozen=True)
class Pause:
    """A journaled pause (see the module docstring)."""

    reason: str
    since: float
    until: float | None = None  # lifts by itself at this time (None: only by resume)
    flatten: bool = False  # closing everything is still under way

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Pause | None:
        """The pause ``text`` records; None when unreadable (not a pause at all)."""
        try:
            data = json.loads(text)
            return cls(
                reason=str(data["reason"]),
                since=float(data["since"]),
                until=None if data.get("until") is None else float(data["until"]),
                flatten=data.get("flatten") is True,
            )
        except (ValueError, TypeError, KeyError):
            return None

    @classmethod
    def read(cls, text: str) -> Pause:
        """The pause a journal records; one it cannot read is still a pause (the safe
        side), until ``resume`` clears it."""
        return cls.from_json(text) or cls(
            f"a pause recorded in the journal that cannot be read ({text[:60]!r}): "
            "multirun resume clears it",
            time.time(),
        )

    def done_flattening(self) -> Pause:
        return replace(self, flatten=False)


class MoneyWatch:
    """An account's running P&L sums and limits (see the module docstring)."""

    def __init__(
        self,
        limits: RiskSpec | None,
        day: DayStart,
        realized_since: Callable[[float], float],
        now: float,
    ) -> None:
        self.limits = limits
        self.day = day
        self.realized_since = realized_since  # the journal's sum: once at start, once a day
        self.day_start, self.next_day = day.bounds(now)
        self.realized_today = realized_since(self.day_start)
        self.realized_run = 0.0  # realized since this watch began (drawdown's level)
        self.anchor: float | None = None  # sampled NAV minus our level at that sample
        self.sampled_at: float | None = None
        self.peak: float | None = None
        self.loss_base = 0.0  # the day's P&L a resume counts the loss from (<= 0)
        self.last: Money = Money(self.realized_today, None, 0.0)

    def realized(self, delta: float) -> None:
        """A close was priced (or priced again): its realized P&L moved by ``delta``."""
        self.realized_today += delta
        self.realized_run += delta

    def observe(
        self,
        now: float,
        unrealized: float,
        nav: float | None,
        sampled_at: float | None,
        nav_unrealized: float | None = None,
    ) -> Money:
        """The money at ``now``: ``unrealized`` of what is held (the listings'), the last
        ``/balance`` NAV, when it was sampled and the unrealized P&L in that reply (a new
        sample re-anchors the equity estimate)."""
        if now >= self.next_day:
            self.day_start, self.next_day = self.day.bounds(now)
            self.realized_today = self.realized_since(self.day_start)
            self.loss_base = 0.0
        level = self.realized_run + unrealized
        if nav is not None and sampled_at is not None and sampled_at != self.sampled_at:
            at_sample = unrealized if nav_unrealized is None else nav_unrealized
            anchor = nav - (self.realized_run + at_sample)
            if self.anchor is None and self.peak is not None:
                self.peak += anchor  # the peak was on our level alone: now in NAV terms
            self.anchor, self.sampled_at = anchor, sampled_at
        value = level + (self.anchor or 0.0)
        self.peak = value if self.peak is None else max(self.peak, value)
        equity = None if self.anchor is None else value
        self.last = Money(self.realized_today + unrealized, equity, self.peak - value)
        return self.last

    def breach(self, money: Money) -> str | None:
        """Why ``money`` breaks a limit (``daily loss 312.40 > 300``), or None."""
        limits = self.limits
        if limits is None:
            return None
        loss = self.loss_base - money.day_pnl
        if limits.max_daily_loss is not None and loss > limits.max_daily_loss:
            since = " since the resume" if self.loss_base else ""
            return f"daily loss {loss:.2f} > {limits.max_daily_loss:g}{since}"
        if limits.max_drawdown is not None and money.drawdown > limits.max_drawdown:
            return f"drawdown {money.drawdown:.2f} > {limits.max_drawdown:g}"
        return None

    def lifts_at(self, reason: str) -> float | None:
        """When a pause for ``reason`` lifts by itself: a daily loss's at the next day."""
        return self.next_day if reason.startswith("daily loss") else None

    def resumed(self) -> str:
        """``resume``: the drawdown counts from here, and the day's loss from the day's
        P&L now (when it is a loss). Returns that as JSON for the journal
        (:meth:`restore`: a restarted worker counts the same way)."""
        self.peak = None
        self.loss_base = min(0.0, self.last.day_pnl)
        return json.dumps({"day_start": self.day_start, "loss_base": self.loss_base})

    def restore(self, resumed: str | None) -> None:
        """What a resume recorded today (:meth:`resumed`): the day's loss counts from it
        again after a restart; a resume of an earlier day counts for nothing."""
        try:
            data = json.loads(resumed or "{}")
            if float(data["day_start"]) == self.day_start:
                self.loss_base = min(0.0, float(data["loss_base"]))
        except (ValueError, TypeError, KeyError):
            return
