"""systemd's readiness and watchdog protocol (``sd_notify``), standard library only.

A unit of ``Type=notify`` starts a process with ``NOTIFY_SOCKET`` set: the path of a unix
datagram socket (``@name`` for the abstract namespace) to which the process sends lines
such as ``READY=1`` (started: systemd now runs the unit's dependents and its watchdog) and
``WATCHDOG=1`` (alive: sent more often than ``WatchdogSec``, else systemd kills and
restarts the unit). Before ``READY=1``, ``EXTEND_TIMEOUT_USEC=N`` asks for N more
microseconds of start-up, so a long start that still shows signs of life is not killed.

Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing. A send that fails
is ignored: systemd's own timeouts then tell the truth (the unit is killed and restarted).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

ENV = "NOTIFY_SOCKET"
BEAT_EVERY_S = 1.0  # at most one datagram a second, however often the worker beats


class SdNotify:
    """Tells systemd at ``address`` that the service is ready, alive, or stopping."""

    def __init__(
        self,
        address: str | None,
        *,
        extend_s: float = 0.0,
        every_s: float = BEAT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = _socket_address(address) if address else None
        self.extend_s = extend_s  # asked for at each beat before READY=1 (0: never)
        self.every_s = every_s
        self.clock = clock
        self.is_ready = False
        self._next_beat = 0.0

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, *, extend_s: float = 0.0
    ) -> SdNotify:
        return cls(environ.get(ENV) or None, extend_s=extend_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> None:
        """``READY=1`` (once): the service is up; from now on beats are ``WATCHDOG=1``."""
        if self.is_ready:
            return
        self.is_ready = True
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def beat(self) -> None:
        """A sign of life: ``WATCHDOG=1`` once ready, before that a start-up extension;
        at most one datagram every ``every_s``."""
        if self.address is None:
            return
        now = self.clock()
        if now < self._next_beat:
            return
        self._next_beat = now + self.every_s
        if self.is_ready:
            self.send("WATCHDOG=1")
        elif self.extend_s > 0:
            self.send(f"EXTEND_TIMEOUT_USEC={int(self.extend_s * 1_000_000)}")

    def stopping(self, status: str = "") -> None:
        self.send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def send(self, message: str) -> bool:
        """One datagram; False when there is no socket or it could not be sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError:
            return False
        return True


def _socket_address(address: str) -> str | bytes:
    """``@name`` is in the abstract namespace: a leading NUL byte instead of the ``@``."""
    return b"\0" + address[1:].encode() if address.startswith("@") else address
