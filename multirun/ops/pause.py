"""``multirun pause``, ``resume`` and ``flatten``: one control request, and its reply printed.

The running supervisor sends each named account's worker the command on its command
pipe and replies once each worker has answered (:mod:`multirun.supervisor.pause_requests`):
PAUSED (no new opens; closes and the strategy's FLAT still act) and why, RUNNING again, or
for a flatten, what it closed and what is still open (its journal). Exit 0 when every
named account got there (a flatten: PAUSED and holding nothing), else 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from multirun.core.errors import UsageError
from multirun.ops import control_client
from multirun.ops.control_client import Echo

COMMANDS = ("pause", "resume", "flatten")


def send(
    state_dir: Path,
    cmd: str,
    names: Sequence[str],
    *,
    every: bool,
    timeout_s: float,
    echo: Echo = print,
    echo_err: Echo = print,
) -> int:
    """``cmd`` (pause, resume, flatten) for ``names`` (or ``every`` running account); waits
    for the workers' answer and prints one line per account; 0 when all got there."""
    if cmd not in COMMANDS:
        raise UsageError(f"{cmd}: not one of {', '.join(COMMANDS)}")
    if every and names:
        raise UsageError(f"{cmd} takes NAME... or --all, not both")
    if not every and not names:
        raise UsageError(f"{cmd} takes [CONFIG] NAME... or --all")
    payload = {"cmd": cmd, "names": list(names), "all": every}
    reply = control_client.request(state_dir, payload, timeout_s=timeout_s)
    return control_client.show(reply, echo, echo_err)
