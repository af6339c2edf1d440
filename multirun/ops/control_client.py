"""The control socket's client: `multirun stop/start/restart NAME...` and `multirun reload`.

Each command sends one JSON request to the running supervisor's socket
(``state_dir/control.sock``, see :mod:`multirun.supervisor.control_server`), waits for its
one reply (the supervisor answers once the change is done), prints one line per account with its new
state, and returns the exit status: 0 only if every named account reached it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from multirun.core import procutil
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.supervisor.control_server import MAX_REQUEST, PROTOCOL, bind_or_connect

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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(min(timeout_s, 10.0))
        try:
            bind_or_connect(sock, path, bind=False)
        except OSError as error:
            raise NotRunning(
                f"the supervisor on {state_dir} does not answer on {path.name} "
                f"({error.strerror or error}); is it an older multirun?"
            ) from None
        sock.sendall(json.dumps({"v": PROTOCOL, **payload}).encode() + b"\n")
        return _read_reply(sock, time.monotonic() + timeout_s)
    finally:
        sock.close()


def _read_reply(sock: socket.socket, deadline: float) -> dict[str, Any]:
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SupervisorError("no reply from the supervisor in time (the change may go on)")
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as error:
            raise SupervisorError(f"the supervisor closed the connection: {error}") from None
        if not chunk:
            raise SupervisorError("the supervisor closed the connection without a reply")
        data += chunk
        if len(data) > 64 * MAX_REQUEST:
            raise SupervisorError("the supervisor's reply is too long")
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        raise SupervisorError("the supervisor's reply is not JSON") from None
    if not isinstance(reply, dict):
        raise SupervisorError("the supervisor's reply is not a JSON object")
    return reply


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
