"""Confirmation poll schedules: a short first pause, then back off to a steady pace.

A fill or a close is often listed almost at once (the simulator lists a market order
``fill_delay_ms`` after it, 20 ms by default; the real server often as fast), so the
first re-read of a listing comes after a few milliseconds. A trade that is slower to show
is read less and less often, up to the schedule's longest pause. Each poll is a request
against a rate-limited API: :meth:`Polls.budget` is how many a wait of a given length can
cost, and the tests hold every schedule to it.

A :class:`Learned` schedule also remembers how long the server took to show the change
on the last few confirmations of one kind (a fill listed after an open, a trade gone
after a close) and makes its first poll about that long after the send, instead of
reading at once a listing that cannot show the change yet: one read per confirmation
most of the time, where a fixed schedule makes several. It lives in the worker's memory
(a restart relearns in a few orders).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Polls:
    """Pauses between the polls of one wait: ``first_s``, then each ``factor`` times the
    last, never more than ``max_s``. ``factor`` 1 is a fixed pace. The first poll is made
    ``delay_s`` after the send (at once when that time has passed already)."""

    first_s: float
    factor: float
    max_s: float
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.factor < 1 or self.delay_s < 0:
            raise ValueError(
                f"bad poll schedule {self}: need 0 < first_s <= max_s, factor >= 1, delay_s >= 0"
            )

    def schedule(self) -> Polls:
        """The schedule of the next wait: this one (a fixed schedule learns nothing)."""
        return self

    def record(self, seen_s: float, missed_s: float | None) -> None:
        """A fixed schedule learns nothing (see :meth:`Learned.record`)."""

    def pauses(self) -> Iterator[float]:
        """The pauses, one after each poll, without end."""
        pause = self.first_s
        while True:
            yield pause
            pause = min(pause * self.factor, self.max_s)

    def budget(self, seconds: float) -> int:
        """The most polls a wait of ``seconds`` can make on this schedule: the first (at
        ``delay_s``, or at the wait's end if that comes first), one after each pause that
        ends within the wait, and one at its end when the last pause is cut short by it
        (requests take time too: the real count is lower)."""
        seconds = max(0.0, seconds - self.delay_s)
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


class Schedule(Protocol):
    """What a wait asks of its schedule: a fixed :class:`Polls` or a :class:`Learned`."""

    def schedule(self) -> Polls: ...
    def record(self, seen_s: float, missed_s: float | None) -> None: ...


LEARN_KEEP = 8  # confirmations remembered per kind
LEARN_MIN = 2  # before this many, the base schedule (its first poll at once)
LEARN_FLOOR_S = 0.002  # learned delays are kept within these bounds; the floor: at once
LEARN_CEILING_S = 1.0
# A first poll that already finds the change says only "at most this long" (and no more
# than the planned delay, when the caller came late to it): remembered a tenth shorter,
# so the first poll creeps earlier while the server is fast. A later poll says "after
# the last miss, by this poll": remembered as it is, but at most a fifth past the miss
# (the base schedule's 50 ms pace would overstate it). The estimate is the longest delay
# remembered: each miss costs a request against a rate-limited API, while a first poll a
# few ms late costs nothing a strategy ticking every second or more can see. Simulated
# (4000 confirmations, the delay 20 ms plus a random tail: tests/api/test_polls.py), the
# polls per confirmation and the mean time between the change and its poll:
#   tail 0-2 ms uniform:       1.07 polls, 2.7 ms  (the upper quartile: 1.24, 2.3 ms)
#   tail exponential, 5 ms:    1.08 polls, 14 ms   (1.39, 5 ms)
#   tail exponential, 15 ms:   1.08 polls, 43 ms   (1.52, 15 ms)
# Measured deployed (50 accounts at 5 s on a loaded 2-core machine), the upper quartile
# made 1.42 reads per fill and 1.6 per close.
LEARN_SHRINK = 0.9
LEARN_MISS_MARGIN = 1.2
LEARN_PICK = 1.0  # of the remembered delays, sorted: the longest


class Learned:
    """``base`` until :data:`LEARN_MIN` confirmations were recorded; then a schedule
    whose first poll comes the learned delay after the send, followed by ``base``'s
    back-off from a first pause of an eighth of that delay (at least ``base.first_s``).
    Its polls are never more than ``base``'s over any wait: it starts later and its
    pauses are no shorter."""

    def __init__(self, base: Polls) -> None:
        self.base = base
        self._seen: deque[float] = deque(maxlen=LEARN_KEEP)

    def __repr__(self) -> str:
        return f"Learned({self.base}, estimate={self.estimate()})"

    def estimate(self) -> float | None:
        """How long after the send the change is expected to show (None: not learned;
        0: at once)."""
        if len(self._seen) < LEARN_MIN:
            return None
        ordered = sorted(self._seen)
        delay = ordered[int(LEARN_PICK * (len(ordered) - 1))]
        return 0.0 if delay <= LEARN_FLOOR_S else delay

    def schedule(self) -> Polls:
        delay = self.estimate()
        if delay is None:
            return self.base
        first = min(max(self.base.first_s, delay / 8), self.base.max_s)
        return Polls(first, self.base.factor, self.base.max_s, delay_s=delay)

    def record(self, seen_s: float, missed_s: float | None) -> None:
        """The change showed at the poll made ``seen_s`` after the send; ``missed_s``:
        when the last poll that did not show it was made (None: the wait's first poll
        showed it, so it may have shown sooner)."""
        if missed_s is None:
            delay = self.estimate()
            sample = LEARN_SHRINK * (seen_s if not delay else min(seen_s, delay))
        else:
            sample = min(seen_s, LEARN_MISS_MARGIN * missed_s + LEARN_FLOOR_S)
        self._seen.append(min(max(sample, LEARN_FLOOR_S), LEARN_CEILING_S))


# Until a just-acknowledged trade is listed in opened_trades (Reconciler.await_listed):
# 4, 6, 9, 13.5, 20, 30, 46 ms, then every 50 ms (the old fixed pace). Budget: over the
# 5 s reconcile window at most 106 polls (the old schedule: 101); over any wait at most 5
# more than the old schedule; over the first 50 ms 6 instead of 2 (the ones that find a
# fill listed 20 ms after it was sent some 25 ms sooner).
LISTED_POLLS = Polls(first_s=0.004, factor=1.5, max_s=0.05)
# Until closed trades leave opened_trades (multirun.api.confirm): the same start, backing off
# to 0.5 s as before. Budget: over a 10 s close confirmation at most 31 polls (old: 24);
# over any wait at most 8 more than the old schedule.
SETTLE_POLLS = Polls(first_s=0.004, factor=1.5, max_s=0.5)

# Both learn (Learned) per account in the worker: one poll per confirmation most of the
# time once a couple are seen, and never more polls than the schedule it learns from.

# The schedules before issue 14, for benches that compare the two in one run.
OLD_LISTED_POLLS = Polls(first_s=0.05, factor=1.0, max_s=0.05)
OLD_SETTLE_POLLS = Polls(first_s=0.05, factor=2.0, max_s=0.5)
