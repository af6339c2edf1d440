"""An account worker's status.json: what it says, written atomically and best-effort.

:func:`fields` is what :meth:`multirun.worker.Worker.status` returns; a
:class:`StatusFile` writes it after every tick and state change. A state directory
that cannot take it is logged once (again only after a success), and never stands in
the way of an order or a close.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multirun import procutil
from multirun.clock import iso_ms, iso_of
from multirun.errors import MultirunError
from multirun.states import STOPPED

if TYPE_CHECKING:
    from multirun.worker import Worker

log = logging.getLogger("multirun.worker")


def fields(worker: Worker) -> dict[str, Any]:
    """The status of ``worker``, as status.json holds it."""
    expires = worker.client.token_expires_utc
    next_due = worker.ticker.next_due if worker.ticker and worker.state != STOPPED else None
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


class StatusFile:
    """One account's status.json, rewritten atomically; a failure is logged once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failing = False  # the last write failed (logged once)

    def write(self, status: Callable[[], dict[str, Any]]) -> None:
        """Best-effort: a failure (building or writing it) is logged once (again only
        after a success)."""
        try:
            procutil.write_json_atomic(self.path, status())
        except (OSError, MultirunError) as exc:
            if not self.failing:
                log.warning("cannot write %s (%s): going on without it", self.path, exc)
            self.failing = True
        else:
            if self.failing:
                log.info("%s written again", self.path)
            self.failing = False
