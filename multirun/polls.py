"""Confirmation poll schedules: a short first pause, then back off to a steady pace.

A fill or a close is often listed almost at once (the simulator lists a market order
``fill_delay_ms`` after it, 20 ms by default; the real server often as fast), so the
first re-read of a listing comes after a few milliseconds. A trade that is slower to show
is read less and less often, up to the schedule's longest pause. Each poll is a request
against a rate-limited API: :meth:`Polls.budget` is how many a wait of a given length can
cost, and the tests hold every schedule to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Polls:
    """Pauses between the polls of one wait: ``first_s``, then each ``factor`` times the
    last, never more than ``max_s``. ``factor`` 1 is a fixed pace."""

    first_s: float
    factor: float
    max_s: float

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.factor < 1:
            raise ValueError(f"bad poll schedule {self}: need 0 < first_s <= max_s, factor >= 1")

    def pauses(self) -> Iterator[float]:
        """The pauses, one after each poll, without end."""
        pause = self.first_s
        while True:
            yield pause
            pause = min(pause * self.factor, self.max_s)

    def budget(self, seconds: float) -> int:
        """The most polls a wait of ``seconds`` can make on this schedule: the first (at
        once), one after each pause that ends within the wait, and one at its end when
        the last pause is cut short by it (requests take time too: the real count is
        lower)."""
        polls, spent = 1, 0.0
        for pause in self.pauses():
            if pause >= self.max_s:
                # the steady pace from here on: count the rest at once
                rest = max(0.0, seconds - spent) / self.max_s
                whole = math.floor(rest + 1e-9)
                return polls + whole + (1 if rest - whole > 1e-9 else 0)
            if spent + pause > seconds + 1e-9:
                return polls + (1 if seconds - spent > 1e-9 else 0)
            spent += pause
            polls += 1
        raise AssertionError("unreachable")  # pauses() never ends


# Until a just-acknowledged trade is listed in opened_trades (Reconciler.await_listed):
# 4, 6, 9, 13.5, 20, 30, 46 ms, then every 50 ms (the old fixed pace). Budget: over the
# 5 s reconcile window at most 106 polls (the old schedule: 101); over any wait at most 5
# more than the old schedule; over the first 50 ms 6 instead of 2 (the ones that find a
# fill listed 20 ms after it was sent some 25 ms sooner).
LISTED_POLLS = Polls(first_s=0.004, factor=1.5, max_s=0.05)
# Until closed trades leave opened_trades (multirun.settle): the same start, backing off
# to 0.5 s as before. Budget: over a 10 s close confirmation at most 31 polls (old: 24);
# over any wait at most 8 more than the old schedule.
SETTLE_POLLS = Polls(first_s=0.004, factor=1.5, max_s=0.5)

# The schedules before issue 14, for benches that compare the two in one run.
OLD_LISTED_POLLS = Polls(first_s=0.05, factor=1.0, max_s=0.05)
OLD_SETTLE_POLLS = Polls(first_s=0.05, factor=2.0, max_s=0.5)
