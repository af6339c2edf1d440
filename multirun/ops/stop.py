"""``multirun stop``: SIGTERM the supervisor running on a state directory, wait for it to
exit, and print what it said last: every trade left open, per account, and its verdict."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from multirun.account import final_report
from multirun.core import procutil, statefiles
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.ops import status

STOP_MARGIN_S = 30.0  # `multirun stop` waits stop_timeout plus this (sweeps, services)


def stop(
    state_dir: Path, *, timeout_s: float | None = None, echo: Callable[[str], None] = print
) -> int:
    """SIGTERM the supervisor running on ``state_dir`` and wait for it to exit.

    Waits ``timeout_s``; by default the supervisor's running ``stop_timeout`` (as it
    recorded it in ``supervisor.json``, a reload included) plus :data:`STOP_MARGIN_S`.
    Returns its exit status as it recorded it (0: every account stopped cleanly), or 0
    when none is running (a stale pidfile is removed). Echoes the supervisor's final lines:
    every trade left open, per account.
    """
    layout = StateDir(state_dir)
    pid = status.supervisor_pid(state_dir)
    if pid is None:
        if procutil.remove_stale_pidfile(layout.supervisor_pid):
            echo(f"no supervisor running on {state_dir} (removed a stale pidfile)")
        else:
            echo(f"no supervisor running on {state_dir}")
        return 0
    if timeout_s is None:
        timeout_s = running_stop_timeout_s(layout, pid) + STOP_MARGIN_S
    echo(f"stopping the supervisor (pid {pid}); waiting up to {timeout_s:g} s")
    with contextlib.suppress(ProcessLookupError):  # it exited since we found it
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not procutil.exited(pid):
        if time.monotonic() >= deadline:
            raise SupervisorError(
                f"the supervisor (pid {pid}) is still running after {timeout_s:g} s"
            )
        time.sleep(0.1)
    final = statefiles.read_supervisor(layout)
    code = final.get("exit_code") if final.get("pid") == pid else None
    code = code if isinstance(code, int) else 1
    left = final_report.from_json(final.get("left_open")) if final.get("pid") == pid else []
    for line in final_report.lines(left):
        echo(line)
    if code == 0:
        echo("stopped: every account stopped cleanly")
    else:
        count = sum(len(x.trades) for x in left if x.on_stop == final_report.CLOSE)
        opened = f": {count} trade(s) left open" if count else ""
        echo(f"stopped; exit status {code}{opened}")
    return code


def running_stop_timeout_s(layout: StateDir, pid: int) -> float:
    """The ``stop_timeout`` supervisor ``pid`` runs with, from its ``supervisor.json``
    (the schema's default when it recorded none)."""
    from multirun.config import schema

    data = statefiles.read_supervisor(layout)
    recorded = data.get("stop_timeout_s") if data.get("pid") == pid else None
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        return float(recorded)
    return float(schema.runner_defaults()["stop_timeout"])
