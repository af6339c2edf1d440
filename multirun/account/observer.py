"""What a worker tells an observer of its own work: the hooks telemetry counts through.

The worker calls these at fixed points (a tick's start and end, each order's send); it
knows nothing of what an observer does with them. :data:`NULL_OBSERVER` hears nothing:
a worker without metrics costs nothing more.
"""

from __future__ import annotations

from typing import Protocol

from multirun.account.ticker import Tick


class WorkerObserver(Protocol):
    def tick_started(self, tick: Tick) -> None:
        """A tick begins (before anything of it ran)."""

    def tick_ended(self, tick: Tick, *, failed: bool, healthy: bool) -> None:
        """A tick is over, however it ended. ``failed``: it counted a failure;
        ``healthy``: no failure in a row and not halted after it."""

    def order_sent(self, side: str, error: BaseException | None, seconds: float) -> None:
        """An order's send returned (``error`` None: acknowledged) after ``seconds``."""


class NullObserver:
    """An observer that ignores everything."""

    def tick_started(self, tick: Tick) -> None:
        pass

    def tick_ended(self, tick: Tick, *, failed: bool, healthy: bool) -> None:
        pass

    def order_sent(self, side: str, error: BaseException | None, seconds: float) -> None:
        pass


NULL_OBSERVER = NullObserver()
