"""Forking one supervised child: its pipes, its signals and its bootstrap in the child.

The arbiter calls :func:`fork_child`; everything after the fork that runs in the child
is here too:

- the arbiter's signals are blocked across the fork (a SIGTERM sent right after it would
  otherwise reach a copy of the arbiter's handler and be lost), and unblocked once the
  child's own dispositions are in place;
- the child gets its own process group (the terminal's Ctrl-C is for the arbiter, which
  stops children in order), discards SIGINT/SIGHUP meant for the arbiter, and asks for
  ``death_signal`` when the arbiter dies (PR_SET_PDEATHSIG, plus a thread watching a pipe
  only the arbiter holds open);
- stdin is /dev/null, stdout and stderr are pipes the arbiter reads; every other
  descriptor of the arbiter's is closed (one ``close_range`` call: listing them cost the
  arbiter time in proportion to its children at every fork);
- a child with a ready handshake gets a third pipe and a callback that writes one line
  to it per call (the simulator announces its URL that way; a worker says it is up, then
  each change of its state and halted reason, and its day's P&L and equity);
- an account's child keeps the read end of a fourth pipe, its commands (pause, resume,
  flatten: one JSON line each, see :func:`~multirun.core.statefiles.command_line`), which
  the arbiter creates and writes to;
- the target's exit status becomes the process's: our own errors as one line
  (``multirun: error: ...``), anything else with its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import IO, NoReturn

from multirun.core import procutil
from multirun.core.errors import MultirunError, exit_code_for

CHILD_ERROR = "multirun: error: "  # how a child reports the error it exits with
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD)
# Meant for the arbiter when they reach a child still in its process group (Ctrl-C, the
# terminal closing): a child discards them; the arbiter stops it in order with SIGTERM.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGHUP)

Ready = Callable[[str], None]
Handler = Callable[[int, FrameType | None], object] | int | None


@dataclass(frozen=True)
class ChildContext:
    """What a child's target is given."""

    name: str
    # The line each child with a ready handshake announced (the simulator: its URL).
    announced: Mapping[str, str]
    # One line to the arbiter, never blocking (a no-op for a child without handshake).
    ready: Ready
    # An account: the read end of its command pipe (the worker reads it between ticks).
    commands: int | None = None


# The function a forked child runs; its return value is the child's exit status.
Target = Callable[[ChildContext], int]


@dataclass(frozen=True)
class Forked:
    """A child just forked: its pid and the arbiter's ends of its pipes."""

    pid: int
    stdout: int
    stderr: int
    ready: int | None  # the ready pipe, for a child with a handshake
    commands: int | None = None  # an account: the write end of its command pipe


def fork_child(
    name: str,
    main: Callable[[Ready], int],
    *,
    death_signal: int,
    death_r: int,
    handshake: bool = False,
    hold: int = -1,
    commands: int = -1,
) -> Forked:
    """Fork a child that runs ``main(ready)`` and exits with its status.

    ``death_r`` is the read end of a pipe only the arbiter writes to (EOF: it died); the
    child closes every other descriptor above 2 but its own pipes. With ``hold`` (the read
    end of a pipe the arbiter keeps open while it forks a batch), the child waits for its
    EOF before running ``main``: the arbiter forks 500 workers without competing with them
    for the CPU. ``commands`` (an account's command pipe, read end) stays open in the child
    (the caller closes its own copy). Raises OSError when the fork fails (EAGAIN, ENOMEM),
    with every pipe closed again.
    """
    out_r, out_w = procutil.pipe()
    err_r, err_w = procutil.pipe()
    ready_r, ready_w = procutil.pipe() if handshake else (-1, -1)
    ours, theirs = [out_r, err_r, ready_r], [out_w, err_w, ready_w]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    parent = os.getpid()
    keep = [death_r, *(fd for fd in (*theirs, hold, commands) if fd >= 0)]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            procutil.set_process_name(f"mr:{name}")  # ps/top tell the accounts apart
            ready = _announcer(ready_w) if handshake else _no_announcer
            run = functools.partial(_held, hold, functools.partial(main, ready))
            _child(parent, death_signal, death_r, keep, out_w, err_w, run, mask)
    except OSError:
        for fd in (*ours, *theirs):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for fd in theirs:
        if fd >= 0:
            os.close(fd)
    return Forked(pid, out_r, err_r, ready_r if handshake else None)


def _held(hold: int, main: Callable[[], int]) -> int:
    """Wait for EOF on ``hold`` (every fork of the batch done, or the arbiter gone), then
    run ``main``. A signal meanwhile acts as it would on a child that has not started."""
    if hold >= 0:
        with contextlib.suppress(OSError):
            while os.read(hold, 1):
                pass
        with contextlib.suppress(OSError):
            os.close(hold)
    return main()


def _announcer(ready_w: int) -> Ready:
    """One line per call, never blocking: the ready line, then an account's changes of
    condition. A line the full pipe cannot take now is dropped (its status file stays
    the record); one the arbiter no longer reads (a service after its ready line) too."""
    os.set_blocking(ready_w, False)

    def ready(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(ready_w, line.encode() + b"\n")

    return ready


def _no_announcer(line: str) -> None:
    pass


def _child(
    parent: int,
    death_signal: int,
    death_r: int,
    keep: list[int],
    out_w: int,
    err_w: int,
    main: Callable[[], int],
    mask: Iterable[int],
) -> NoReturn:
    """In the forked child: detach from the arbiter's state, then run ``main``."""
    code: object = 1
    try:
        _setup(parent, death_signal, death_r, keep, out_w, err_w)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending SIGTERM acts now
        code = main()
    except SystemExit as error:
        code = 0 if error.code is None else error.code if isinstance(error.code, int) else 1
    except MultirunError as error:  # ours carry a one-line message: no traceback
        print(f"{CHILD_ERROR}{error}", file=sys.stderr)
        code = exit_code_for(error)
    except BaseException as error:
        traceback.print_exc()
        code = exit_code_for(error)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def _setup(
    parent: int, death_signal: int, death_r: int, keep: list[int], out_w: int, err_w: int
) -> None:
    """Runs with the arbiter's signals blocked (see :func:`fork_child`)."""
    # What the arbiter made since preload's freeze (its children, their pipes) is never
    # ours to collect: frozen, the collector never writes to (and so copies) its pages.
    # Python's gc docs: freeze "right before fork()"; here, right after, in the child only,
    # so the arbiter keeps collecting its own garbage. 0.13 MiB PSS less per account.
    gc.freeze()
    signal.set_wakeup_fd(-1)
    for signum in TERMINAL_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # discards one already pending
    os.setpgid(0, 0)  # the terminal's Ctrl-C is for the arbiter, which stops us in order
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, default_handler(signum))
    procutil.set_parent_death_signal(death_signal)
    if os.getppid() != parent:  # the arbiter died before prctl took effect
        os._exit(1)
    close_all_but(keep)
    _watch_parent(death_r, death_signal)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in {null, out_w, err_w} - {0, 1, 2}:
        os.close(fd)
    sys.stdout = _text(1)
    sys.stderr = _text(2)
    logging.getLogger().handlers.clear()  # the worker configures its own, on stderr


def close_all_but(keep: Iterable[int]) -> None:
    """Close every descriptor above 2 but ``keep`` (close_range(2) where the kernel has it)."""
    limit = os.sysconf("SC_OPEN_MAX")
    low = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(limit, low))


def default_handler(signum: int) -> Handler:
    """What ``signum`` does in a process that installed nothing for it."""
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def _text(fd: int) -> IO[str]:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _watch_parent(death_r: int, signum: int) -> None:
    """Fallback for PR_SET_PDEATHSIG: EOF on ``death_r`` means the arbiter is gone."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(death_r, 1):
                pass
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
