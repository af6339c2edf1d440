"""An account worker's status.json: what it says, written atomically and best-effort.

:meth:`multirun.account.worker.Worker.status` says what (a
:class:`~multirun.core.statefiles.WorkerStatus`); a :class:`StatusFile` writes it after
every tick and state change, except that an account ticking more often than every
:data:`PROGRESS_EVERY_S` seconds writes a tick that only made progress (tick counts and
times, orders, positions, P&L: not the :data:`CONDITION` fields, such as its state, an
error, a halt, a stop, a blocking guardrail or its first tick, which are written at
once) at most that often: many workers rewriting their file atomically every second in
the same instant made each other's ticks late. A state directory that cannot take it is
logged once (again only after a success), never stands in the way of an order or a
close, and is tried again at every write until it succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from multirun.core.errors import MultirunError
from multirun.core.procutil import RewrittenJson
from multirun.core.statedir import AccountDir
from multirun.core.statefiles import WorkerStatus, write_worker_status

log = logging.getLogger("multirun.worker")


# The least time between two writes of progress alone (a 1 s account: every other tick).
PROGRESS_EVERY_S = 2.0
# The fields whose change is written at once; the others are progress. "ticks" counts
# only as ticked or not (the first tick is news: benches and tests wait for it).
CONDITION = (
    "name", "pid", "state", "started_utc", "last_error", "halted_reason", "strategy",
    "interval_s", "tick_offset_ms", "consecutive_failures", "consecutive_order_failures",
    "uncertain_orders", "blocked_by", "stop_reason", "token_expires_utc",
)  # fmt: skip


def condition(status: WorkerStatus) -> tuple[object, ...]:
    """What of ``status`` is written at once when it changes."""
    values = cast(dict[str, object], status)
    return (*(repr(values.get(key)) for key in CONDITION), bool(values.get("ticks")))


class StatusFile:
    """One account's status.json, rewritten atomically (see the module docstring) for
    an account ticking every ``interval_s``; a failure is logged once. ``clock`` is a
    monotonic clock (tests pass a fake one)."""

    def __init__(
        self,
        account: AccountDir,
        interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account = account
        self.path = account.status
        self.failing = False  # the last write failed (logged once)
        self.why: str | None = None  # and why (the OS's word: "No space left on device")
        # The least time between two writes of progress alone (0: every tick).
        self.every_s = PROGRESS_EVERY_S if 0 < interval_s < PROGRESS_EVERY_S else 0.0
        self._clock = clock
        self._written: tuple[object, ...] | None = None  # condition of the last write
        self._file = RewrittenJson(account.status)  # no inode made and freed each tick
        self._written_at = 0.0

    def due(self, status: WorkerStatus) -> bool:
        """Whether ``status`` must be written now."""
        if self.failing or self._written is None or condition(status) != self._written:
            return True
        # 0.9: a tick due exactly every_s after the last write may come a little early
        return self._clock() - self._written_at >= 0.9 * self.every_s

    def write(self, status: Callable[[], WorkerStatus], *, force: bool = False) -> None:
        """Write ``status()`` if due (or ``force``). Best-effort: a failure (building or
        writing it) is logged once (again only after a success)."""
        try:
            fields = status()
            if not force and not self.due(fields):
                return
            # One line (json's C encoder): an indented file is ~10x slower to encode.
            write_worker_status(self.account, fields, self._file)
            self._written, self._written_at = condition(fields), self._clock()
        except (OSError, MultirunError) as exc:
            if not self.failing:
                log.warning("cannot write %s (%s): going on without it", self.path, exc)
            self.failing = True
            self.why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        else:
            if self.failing:
                log.info("%s written again", self.path)
            self.failing = False
