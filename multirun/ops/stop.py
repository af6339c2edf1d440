"""``multirun stop``: SIGTERM the supervisor running on a state directory, wait for it to
exit, and print what it said last: every trade left open, per account, the accounts that
needed a sweep, and its verdict (its ``final_lines``, as it printed them).

It waits for the supervisor's own deadline: once stopping, the supervisor records in
``supervisor.json`` (``stop_deadline_utc``) when every child of it will be gone at the
latest (``stop_timeout`` for the workers, a sweep's deadline and grace, the services'
stop timeout), and keeps it up to date; ``stop`` waits until then plus
:data:`STOP_MARGIN_S` (the final report reads every journal), following the deadline if it
moves later.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from multirun.account import final_report
from multirun.core import procutil, statefiles
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.ops import status
from multirun.supervisor.program import SERVICE_STOP_TIMEOUT_S
from multirun.supervisor.sweeps import SWEEP_GRACE_S

STOP_MARGIN_S = 10.0  # past the supervisor's own deadline: its final report and its exit
RECORD_WAIT_S = 2.0  # how long the supervisor gets to record its deadline once signalled
REREAD_S = 0.5  # how often the recorded deadline is read again while waiting


def stop(
    state_dir: Path, *, timeout_s: float | None = None, echo: Callable[[str], None] = print
) -> int:
    """SIGTERM the supervisor running on ``state_dir`` and wait for it to exit.

    Waits ``timeout_s``; by default until the deadline the supervisor records (plus
    :data:`STOP_MARGIN_S`), or, until it records one, its worst case by its running
    ``stop_timeout`` (:func:`worst_case_s`). Returns its exit status as it recorded it
    (0: nothing of ours held), or 0 when none is running (a stale pidfile is removed).
    Echoes the supervisor's final lines: every trade left open, per account, and its
    verdict. Raises :class:`SupervisorError` when it is still running at the end of the wait.
    """
    layout = StateDir(state_dir)
    pid = status.supervisor_pid(state_dir)
    if pid is None:
        if procutil.remove_stale_pidfile(layout.supervisor_pid):
            echo(f"no supervisor running on {state_dir} (removed a stale pidfile)")
        else:
            echo(f"no supervisor running on {state_dir}")
        return 0
    fallback_s = worst_case_s(running_stop_timeout_s(layout, pid)) + STOP_MARGIN_S
    if timeout_s is not None:
        echo(f"stopping the supervisor (pid {pid}); waiting up to {timeout_s:g} s")
    sent = time.monotonic()
    with contextlib.suppress(ProcessLookupError):  # it exited since we found it
        os.kill(pid, signal.SIGTERM)
    if timeout_s is not None:
        limit = sent + timeout_s
    else:
        recorded = first_deadline(layout, pid, sent + RECORD_WAIT_S)
        limit = recorded if recorded is not None else sent + fallback_s
        echo(f"stopping the supervisor (pid {pid}); waiting up to {math.ceil(limit - sent)} s")
    if not wait(layout, pid, limit, follow=timeout_s is None, echo=echo):
        if timeout_s is not None:
            late = f"after {timeout_s:g} s"
        elif deadline(layout, pid) is None:
            late = f"after {math.ceil(time.monotonic() - sent)} s, with no stop deadline recorded"
        else:
            late = f"{STOP_MARGIN_S:g} s past its own stop deadline"
        raise SupervisorError(
            f"the supervisor (pid {pid}) is still running {late}; it goes on stopping: "
            "`multirun stop` again waits for it, `multirun status` shows the accounts"
        )
    return final_lines(layout, pid, echo)


def wait(
    layout: StateDir, pid: int, limit: float, *, follow: bool, echo: Callable[[str], None]
) -> bool:
    """Wait for ``pid`` to exit until ``limit`` (monotonic); with ``follow``, until the
    deadline it records (plus :data:`STOP_MARGIN_S`) when that moves later. Whether it
    exited."""
    announced, reread = limit, time.monotonic() + REREAD_S
    while not procutil.exited(pid):
        now = time.monotonic()
        if follow and now >= reread:
            reread = now + REREAD_S
            recorded = deadline(layout, pid)
            if recorded is not None and recorded > limit:
                limit = recorded
                if limit > announced + 1.0:
                    echo(f"its stop deadline moved: waiting up to {math.ceil(limit - now)} s more")
                    announced = limit
        if now >= limit:
            return False
        time.sleep(0.1)
    return True


def final_lines(layout: StateDir, pid: int, echo: Callable[[str], None]) -> int:
    """Echo what supervisor ``pid`` said last (its ``final_lines``); its exit status."""
    final = statefiles.read_supervisor(layout)
    code = final.get("exit_code") if final.get("pid") == pid else None
    if not isinstance(code, int):
        echo(
            f"the supervisor (pid {pid}) exited without its final report: what the accounts "
            "hold is unknown (`multirun status` shows what each one said last)"
        )
        return 1
    lines = final.get("final_lines")
    if isinstance(lines, list) and lines and all(isinstance(x, str) for x in lines):
        for line in lines:
            echo(line)
        return code
    # A supervisor from before final_lines: its left_open, and a verdict from its status.
    left = final_report.from_json(final.get("left_open"))
    for line in final_report.lines(left):
        echo(line)
    if code == 0:
        echo("stopped: every account stopped cleanly")
    else:
        count = sum(len(x.trades) for x in left if x.on_stop == final_report.CLOSE)
        opened = f": {count} trade(s) left open" if count else ""
        echo(f"stopped; exit status {code}{opened}")
    return code


def first_deadline(layout: StateDir, pid: int, until: float) -> float | None:
    """The deadline supervisor ``pid`` records once signalled (:func:`deadline`), waited
    for until ``until`` (monotonic); None if it recorded none by then, or exited."""
    while True:
        found = deadline(layout, pid)
        if found is not None or procutil.exited(pid) or time.monotonic() >= until:
            return found
        time.sleep(0.02)


def deadline(layout: StateDir, pid: int) -> float | None:
    """Monotonic: supervisor ``pid``'s recorded stop deadline plus :data:`STOP_MARGIN_S`;
    None when it records none (not stopping, or from before ``stop_deadline_utc``)."""
    data = statefiles.read_supervisor(layout)
    recorded = data.get("stop_deadline_utc") if data.get("pid") == pid else None
    if not isinstance(recorded, str):
        return None
    try:
        at = datetime.fromisoformat(recorded).timestamp()
    except ValueError:
        return None
    return time.monotonic() + (at - time.time()) + STOP_MARGIN_S


def worst_case_s(stop_timeout_s: float) -> float:
    """How long a stop can take at most, by ``stop_timeout`` alone: the workers'
    ``stop_timeout``, then a sweep's (the same) and its grace, then the services'."""
    return 2 * stop_timeout_s + SWEEP_GRACE_S + SERVICE_STOP_TIMEOUT_S


def running_stop_timeout_s(layout: StateDir, pid: int) -> float:
    """The ``stop_timeout`` supervisor ``pid`` runs with, from its ``supervisor.json``
    (the schema's default when it recorded none)."""
    from multirun.config import schema

    data = statefiles.read_supervisor(layout)
    recorded = data.get("stop_timeout_s") if data.get("pid") == pid else None
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        return float(recorded)
    return float(schema.runner_defaults()["stop_timeout"])
