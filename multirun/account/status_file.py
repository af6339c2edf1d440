"""An account worker's status.json: what it says, written atomically and best-effort.

:func:`fields` is what :meth:`multirun.account.worker.Worker.status` returns; a
:class:`StatusFile` writes it after every tick and state change, except that an account
ticking more often than every :data:`PROGRESS_EVERY_S` seconds writes a tick that only
made progress (tick counts and times, orders, positions, P&L: not the :data:`CONDITION`
fields, such as its state, an error, a halt, a stop, a blocking guardrail or its first
tick, which are written at once) at most that often: many workers rewriting their file
atomically every second in the same instant made each other's ticks late. A state
directory that cannot take it is logged once (again only after a success), never stands
in the way of an order or a close, and is tried again at every write until it succeeds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multirun.core import procutil
from multirun.core.clock import iso_ms, iso_of
from multirun.core.errors import MultirunError
from multirun.core.states import State

if TYPE_CHECKING:
    from multirun.account.worker import Worker

log = logging.getLogger("multirun.worker")


def fields(worker: Worker) -> dict[str, Any]:
    """The status of ``worker``, as status.json holds it."""
    expires = worker.client.token_expires_utc
    next_due = worker.ticker.next_due if worker.ticker and worker.state != State.STOPPED else None
    return {
        "name": worker.spec.name,
        "pid": os.getpid(),
        "state": worker.state,
        "started_utc": iso_ms(worker.started),
        "last_tick_utc": iso_ms(worker.last_tick),
        "next_tick_utc": iso_ms(next_due),
        "open_trades": len(worker.journal.held()),
        "token_expires_utc": None if expires is None else iso_of(expires),
        "last_error": worker.last_error,
        "halted_reason": worker.halted_reason,
        "ticks": worker.ticks,
        "orders_sent": worker.orders_sent,
        "updated_utc": iso_ms(time.time()),
        "strategy": worker.spec.strategy,
        "interval_s": worker.spec.interval_s,
        # each tick starts this long after its grid point (ticker.wake_offset), on purpose
        "tick_offset_ms": round(worker.ticker.offset_s * 1000) if worker.ticker else None,
        "consecutive_failures": worker.failures,
        "consecutive_order_failures": worker.order_failures,
        "uncertain_orders": sorted(worker.reconciler.uncertain),
        "open_on_server": worker.reconciler.open_on_server,
        "blocked_by": None if worker.blocked is None else worker.blocked[1],
        "stop_reason": worker.stop.reason,
        **worker.pricing.status(),  # positions, nav, unrealized_pl, realized_pl_today
    }


# The least time between two writes of progress alone (a 1 s account: every other tick).
PROGRESS_EVERY_S = 2.0
# The fields whose change is written at once; the others are progress. "ticks" counts
# only as ticked or not (the first tick is news: benches and tests wait for it).
CONDITION = (
    "name", "pid", "state", "started_utc", "last_error", "halted_reason", "strategy",
    "interval_s", "tick_offset_ms", "consecutive_failures", "consecutive_order_failures",
    "uncertain_orders", "blocked_by", "stop_reason", "token_expires_utc",
)  # fmt: skip


def condition(status: dict[str, Any]) -> tuple[object, ...]:
    """What of ``status`` is written at once when it changes."""
    return (*(repr(status.get(key)) for key in CONDITION), bool(status.get("ticks")))


class StatusFile:
    """One account's status.json, rewritten atomically (see the module docstring) for
    an account ticking every ``interval_s``; a failure is logged once. ``clock`` is a
    monotonic clock (tests pass a fake one)."""

    def __init__(
        self, path: Path, interval_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.failing = False  # the last write failed (logged once)
        # The least time between two writes of progress alone (0: every tick).
        self.every_s = PROGRESS_EVERY_S if 0 < interval_s < PROGRESS_EVERY_S else 0.0
        self._clock = clock
        self._written: tuple[object, ...] | None = None  # condition of the last write
        self._written_at = 0.0

    def due(self, status: dict[str, Any]) -> bool:
        """Whether ``status`` must be written now."""
        if self.failing or self._written is None or condition(status) != self._written:
            return True
        # 0.9: a tick due exactly every_s after the last write may come a little early
        return self._clock() - self._written_at >= 0.9 * self.every_s

    def write(self, status: Callable[[], dict[str, Any]], *, force: bool = False) -> None:
        """Write ``status()`` if due (or ``force``). Best-effort: a failure (building or
        writing it) is logged once (again only after a success)."""
        try:
            fields = status()
            if not force and not self.due(fields):
                return
            # One line (json's C encoder): an indented file is ~10x slower to encode.
            procutil.write_json_atomic(self.path, fields, compact=True)
            self._written, self._written_at = condition(fields), self._clock()
        except (OSError, MultirunError) as exc:
            if not self.failing:
                log.warning("cannot write %s (%s): going on without it", self.path, exc)
            self.failing = True
        else:
            if self.failing:
                log.info("%s written again", self.path)
            self.failing = False
