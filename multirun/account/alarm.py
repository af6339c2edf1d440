"""Deadlines in the worker's main thread (SIGALRM), and the heartbeat it touches.

- :func:`deadline` interrupts the code running under it once ``seconds`` have passed,
  by raising an exception from a SIGALRM handler (so a ``time.sleep`` or a socket
  read is cut short too). The exception is a ``BaseException``: a strategy's
  ``except Exception`` cannot swallow it, and it is raised again every second until
  the code has left the block. Main thread only; code stuck in C that never returns
  to Python is the supervisor's watchdog's job.
- :class:`Heartbeat` touches the account's heartbeat file (its mtime is what the
  supervisor's watchdog reads), and tells ``on_beat`` (systemd's watchdog, under
  ``multirun run-account``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

REPEAT_S = 1.0  # raised again this often while the interrupted code has not left


class DeadlinePassed(BaseException):  # a control-flow signal, like KeyboardInterrupt
    """The code under :func:`deadline` ran past it; ``stack`` is where it was (innermost last)."""

    def __init__(self, what: str, seconds: float, stack: list[str]) -> None:
        super().__init__(f"{what} still running after {seconds:g} s")
        self.what = what
        self.stack = stack


@contextlib.contextmanager
def deadline(seconds: float, what: str, *, below: str | None = None) -> Iterator[None]:
    """Raise :class:`DeadlinePassed` in the block once ``seconds`` have passed.

    ``below``: the name of the function that makes the call being timed; the stack
    kept in the exception starts under it (the strategy's own frames).
    """
    if seconds <= 0:
        raise DeadlinePassed(what, seconds, [])
    active = [True]

    def fire(signum: int, frame: FrameType | None) -> None:
        if active[0]:
            raise DeadlinePassed(what, seconds, _stack(frame, below))

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_S)
    try:
        yield
    finally:
        active[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _stack(frame: FrameType | None, below: str | None) -> list[str]:
    """``file:line in function`` for each frame, outermost first, starting under ``below``."""
    frames = traceback.extract_stack(frame) if frame is not None else []
    if below is not None:
        names = [f.name for f in frames]
        if below in names:
            frames = frames[len(names) - names[::-1].index(below) :]
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in frames]


# The least time between two touches. The watchdog's timeout is at least 32 s: a beat
# at most this much older than the last sign of life changes nothing it decides, and a
# trading tick calls the heartbeat 6-8 times within a few ms (each request, the
# strategy's call): one utime, not eight.
BEAT_GAP_S = 0.5


class Heartbeat:
    """Touches ``path`` (created on first use) when called, at most once every
    :data:`BEAT_GAP_S` (``clock``: a monotonic clock). Never raises: a state directory
    that cannot be written shows in the status file's own warning, and the watchdog
    then sees the account overdue. ``on_beat``: told of each touch as well (it must not
    raise either)."""

    def __init__(
        self,
        path: Path,
        on_beat: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.on_beat = on_beat
        self._clock = clock
        self._last: float | None = None

    def __call__(self) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < BEAT_GAP_S:
            return
        self._last = now
        try:
            os.utime(self.path)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            pass
        if self.on_beat is not None:
            self.on_beat()


def heartbeat_every(watchdog_timeout_s: float) -> float:
    """How often an idle worker touches its heartbeat: a tenth of the watchdog's timeout,
    1 to 5 s. Each wake-up costs CPU (a 60 s account wakes 12 times a minute, not 60),
    and a config's watchdog_timeout is at least 32 s, so a live worker is never close to
    OVERDUE; requests and ticks touch it as well."""
    return min(5.0, max(1.0, watchdog_timeout_s / 10))


def no_heartbeat() -> None:
    """A heartbeat that touches nothing (tests, in-process workers)."""


HeartbeatFn = Callable[[], None]
