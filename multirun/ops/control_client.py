"""The control socket's client: `multirun stop/start/restart NAME...` and `multirun reload`.

Each command sends one JSON request to the running supervisor's socket
(``state_dir/control.sock``, see :mod:`multirun.supervisor.control_server`), waits for its
one reply (the supervisor answers once the change is done), prints one line per account with its new
state, and returns the exit status: 0 only if every named account reached it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from multirun.core import procutil
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.supervisor.control_server import KeptConnection as KeptConnection  # the dashboard's
from multirun.supervisor.control_server import NoAnswer, exchange
from multirun.supervisor.control_server import StatusReplies as StatusReplies  # the dashboard's

Echo = Callable[[str], None]


class NotRunning(SupervisorError):
    """No supervisor serves the control socket of this state directory."""


def running(state_dir: Path) -> bool:
    """Whether a supervisor holds the pidfile lock of ``state_dir``."""
    return procutil.is_locked(StateDir(state_dir).supervisor_pid)


def request(state_dir: Path, payload: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Send one request to the supervisor on ``state_dir``; its reply (a dict)."""
    path = StateDir(state_dir).control_socket
    if not running(state_dir):
        raise NotRunning(f"no supervisor running on {state_dir}")
    try:
        return exchange(path, payload, timeout_s)
    except NoAnswer as error:
        raise NotRunning(
            f"the supervisor on {state_dir} does not answer on {path.name} "
            f"({error}); is it an older multirun?"
        ) from None


def show(reply: dict[str, Any], echo: Echo, echo_err: Echo) -> int:
    """Print a reply's lines (and its error); 0 when it is ok."""
    for line in reply.get("lines") or []:
        echo(str(line))
    if not reply.get("ok"):
        echo_err(f"multirun: error: {reply.get('error') or 'failed'}")
        return 1
    return 0


def command(
    state_dir: Path,
    cmd: str,
    names: Sequence[str],
    *,
    keep: bool = False,
    timeout_s: float,
    echo: Echo = print,
    echo_err: Echo = print,
) -> int:
    """``stop``/``start``/``restart`` NAMES on the running supervisor; waits until done."""
    payload = {"cmd": cmd, "names": list(names), "keep": keep}
    return show(request(state_dir, payload, timeout_s=timeout_s), echo, echo_err)


def reload(
    state_dir: Path,
    config: Path,
    *,
    dry_run: bool,
    timeout_s: float,
    echo: Echo = print,
    echo_err: Echo = print,
) -> int:
    """Ask the running supervisor to reload ``config`` (or only plan it)."""
    payload = {"cmd": "reload", "path": str(config.resolve()), "dry_run": dry_run}
    return show(request(state_dir, payload, timeout_s=timeout_s), echo, echo_err)


def shutdown(state_dir: Path, *, force: bool) -> None:
    """Ask the supervisor to stop (``force``: kill what the stop waits for); no wait."""
    with contextlib.suppress(SupervisorError):
        request(state_dir, {"cmd": "shutdown", "force": force}, timeout_s=10.0)
