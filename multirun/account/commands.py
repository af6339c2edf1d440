"""The supervisor's commands to a worker (pause, resume, flatten), read between its ticks.

The supervisor writes one JSON line per command on the worker's command pipe
(:func:`multirun.core.statefiles.command_line`). :class:`CommandClock` is the worker's
clock: its waits (the ticker's sleep between ticks, the worker's own pauses) end on a stop
request as before, and also read that pipe. A command that arrives while the worker
sleeps wakes it and acts at once (a 1 h interval does not delay it); one that arrives
during a tick (or during start-up reconciliation) is read at the next wait and acts as
soon as the worker is between ticks. Acting is calling the worker's ``pause``,
``resume`` or ``flatten``, on the main thread, never inside a tick: the worker journals
its new state and tells the supervisor on its own pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
from collections.abc import Callable
from typing import Protocol

from multirun.account.ticker import StopFlag
from multirun.core import procutil
from multirun.core.clock import SYSTEM_CLOCK, Clock, StopSignal
from multirun.core.statefiles import read_command

log = logging.getLogger("multirun.worker")


class Actor(Protocol):
    """What a command acts on: the worker (:class:`multirun.account.worker.Worker`)."""

    @property
    def busy(self) -> bool: ...  # in a tick or closing: commands wait

    @property
    def ticker(self) -> object | None: ...  # None until it is reconciled and ticking

    @property
    def stop(self) -> StopFlag: ...

    def pause(self, reason: str) -> None: ...

    def resume(self, reason: str = ...) -> None: ...

    def flatten(self, reason: str) -> None: ...


class CommandReader:
    """The read end of the command pipe, cut into (command, reason) pairs; non-blocking."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd: int | None = fd  # None once the supervisor closed it (or it died)
        self.data = b""

    def read(self) -> list[tuple[str, str]]:
        """The commands complete so far; at EOF the pipe is closed (and None from then on)."""
        if self.fd is None:
            return []
        lines, self.data, eof = procutil.read_lines(self.fd, self.data)
        if eof:
            self.close()
        lines = [line for line in lines if line.strip()]
        found = [read_command(line) for line in lines]
        for line, command in zip(lines, found, strict=True):
            if command is None:
                log.warning("command pipe: not a command, ignored: %r", line[:200])
        return [c for c in found if c is not None]

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class CommandClock:
    """The worker's clock (``inner``'s time) whose waits also serve the command pipe."""

    def __init__(self, reader: CommandReader, inner: Clock = SYSTEM_CLOCK) -> None:
        self.reader = reader
        self.inner = inner
        # The worker, once built (it is built with this clock): commands read before
        # then wait in ``pending``.
        self.actor: Actor | None = None
        self.pending: list[tuple[str, str]] = []
        self.acting = False  # a flatten waits on the server: no command inside another

    def time(self) -> float:
        return self.inner.time()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first (True) or a command acted (False, early:
        the caller looks at the time again)."""
        self.pending += self.reader.read()  # what came during the tick (non-blocking)
        if self.serve():
            return stop.is_set()
        if not isinstance(stop, StopFlag):
            return self.inner.wait(stop, seconds)
        end = self.inner.monotonic() + max(0.0, seconds)
        while not stop.is_set():
            # poll, not select: the pipe keeps the number it had in the supervisor, above
            # 1024 (select's limit) once a few hundred accounts run
            poller = select.poll()
            for fd in (stop.fileno(), self.reader.fd):
                if fd is not None:
                    poller.register(fd, select.POLLIN)
            left = end - self.inner.monotonic()
            readable = [fd for fd, _ in poller.poll(max(0.0, left) * 1000)]
            if self.reader.fd is not None and self.reader.fd in readable:
                self.pending += self.reader.read()
                if self.serve():
                    break
            elif not readable:
                break
        return stop.is_set()

    def serve(self) -> bool:
        """Act on the commands read so far if the worker is between ticks; whether any acted."""
        actor = self.actor
        if not self.pending or actor is None or self.acting:
            return False
        if actor.busy or actor.ticker is None or actor.stop.is_set():
            return False
        commands, self.pending = self.pending, []
        self.acting = True
        try:
            for cmd, reason in commands:
                self.act(actor, cmd, reason)
        finally:
            self.acting = False
        return True

    def act(self, actor: Actor, cmd: str, reason: str) -> None:
        log.info("the supervisor asks: %s (%s)", cmd, reason or "no reason given")
        action: Callable[[str], None] = {
            "pause": actor.pause, "resume": actor.resume, "flatten": actor.flatten,
        }[cmd]  # fmt: skip
        try:
            action(reason or f"{cmd} asked by the supervisor")
        except Exception as error:  # the ticks go on; the worker's status says what holds
            log.error("%s failed: %s: %s", cmd, type(error).__name__, error)
