"""`multirun health`: whether one account's worker is ticking, from the supervisor and files.

Asks the running supervisor first (its control socket: the condition each worker last
said on its pipe, true when no file can be written, a full disk); then reads
``state_dir/<name>/status.json`` (written by the worker after every tick) and asks the
kernel whether the pid it names is still a multirun process; never the server. Healthy:
the worker ticked within its interval plus a grace, or started less than that long ago
and has not ticked yet. The probes of `multirun export` run it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from multirun.config.specs import RunnerSpec
from multirun.core.clock import parse_iso
from multirun.core.procutil import looks_like_multirun
from multirun.core.statedir import StateDir
from multirun.core.statefiles import read_worker_status
from multirun.core.states import State
from multirun.ops import locate
from multirun.ops.status import live_view

# Beyond the interval: a tick that retries a slow server, or start-up reconciliation.
DEFAULT_GRACE_S = 60.0


@dataclass(frozen=True)
class Health:
    """A verdict: healthy or not, and the one line that says why."""

    ok: bool
    line: str


def check(
    runner: RunnerSpec,
    name: str,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    liveness: bool = False,
    now: float | None = None,
) -> Health:
    """The health of account ``name`` of ``runner``.

    ``liveness``: only whether the worker is alive and ticking; a HALTED worker still
    ticks (it sends no orders until restarted, and restarting it would lift the halt),
    so it passes. Without it a HALTED worker is unhealthy (not ready). A PAUSED worker
    (an operator, a money limit, the trading hours) is healthy either way: it does what
    it was told, ticks and manages what it holds; its line says why it is paused.
    """
    now = time.time() if now is None else now
    try:
        interval = runner.account(name).interval_s
    except KeyError:
        known = ", ".join(a.name for a in runner.accounts) or "none"
        return Health(False, f"{name}: no such account in {runner.path} (accounts: {known})")
    said = _said(runner, name)
    if said is not None and said[0] == State.HALTED and not liveness:
        return Health(False, f"{name}: HALTED: {_one_line(said[1] or 'halted')}")
    files = StateDir(runner.state_dir).account(name)
    status, path = read_worker_status(files), files.status
    if not status:
        return Health(False, f"{name}: no status file ({path}): the worker has not started")
    state = str(status.get("state") or "?")
    pid = status.get("pid")
    if state == State.STOPPED:
        why = status.get("last_error") or status.get("stop_reason") or "stopped"
        return Health(False, f"{name}: STOPPED: {_one_line(why)}")
    if isinstance(pid, int) and not looks_like_multirun(pid):
        return Health(False, f"{name}: not running: pid {pid} is gone (last state {state})")
    allowed = interval + grace_s
    last_tick = parse_iso(status.get("last_tick_utc"))
    if state == State.HALTED and not liveness:
        why = status.get("halted_reason") or "halted"
        return Health(False, f"{name}: HALTED: {_one_line(why)}")
    if last_tick is None:
        started = parse_iso(status.get("started_utc"))
        if started is None:
            return Health(False, f"{name}: never ticked, start time unknown")
        age = now - started
        if age > allowed:
            return Health(False, f"{name}: never ticked: started {age:.0f} s ago")
        return Health(True, f"{name}: starting: started {age:.0f} s ago, no tick yet")
    age = now - last_tick
    if age > allowed:
        return Health(
            False,
            f"{name}: stale by {age - interval:.0f} s: last tick {age:.0f} s ago, "
            f"every {interval} s (allowed {allowed:.0f} s)",
        )
    if said is not None and said[0] == State.PAUSED:  # the pipe first: a full disk
        state = f"PAUSED ({_one_line(said[1] or 'paused')})"
    elif state == State.PAUSED:
        state = f"PAUSED ({_one_line(status.get('paused_reason') or 'paused')})"
    return Health(True, f"{name}: ok: {state}, last tick {age:.0f} s ago (every {interval} s)")


def _said(runner: RunnerSpec, name: str) -> tuple[str, str | None] | None:
    """What the worker of ``name`` last said on its pipe, as the running supervisor holds
    it (its control reply); None when no supervisor answers or it said nothing."""
    found = locate.running(runner.state_dir)
    if found is None:
        return None
    entry = live_view(runner.state_dir, found).get("accounts", {}).get(name) or {}
    state = entry.get("worker_state")
    return (state, entry.get("worker_reason")) if state and entry.get("pid") else None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
