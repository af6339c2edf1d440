"""``multirun status``: what each account is doing, merged from the state files.

Sources (all in ``runner.state_dir``):

- ``supervisor.pid``: locked by a running supervisor;
- ``supervisor.json``: the supervisor's view, rewritten on every state change
  (per account: state, pid, started, restarts, last exit, next start);
- ``<name>/status.json``: the worker's view (ticks, trades, token, errors).

Rules: a worker reporting HALTED overrides the supervisor's RUNNING (same pid); OVERDUE
(no heartbeat: the supervisor's watchdog) shows as it is; when no supervisor runs, every
account is STOPPED (FATAL stays FATAL) with its last known details, followed by the final
report of the last stop when it left trades open (``supervisor.json``'s ``left_open``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from multirun import final_report
from multirun.clock import iso_ms, parse_iso, short_time
from multirun.procutil import is_locked, looks_like_multirun, read_json, read_pid
from multirun.specs import RunnerSpec
from multirun.statedir import StateDir
from multirun.states import BACKOFF, FATAL, HALTED, RUNNING, STARTING, STOPPED


@dataclass
class AccountStatus:
    name: str
    state: str
    pid: int | None = None
    started_utc: str | None = None
    uptime_s: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    next_start_utc: str | None = None
    last_tick_utc: str | None = None
    next_tick_utc: str | None = None
    ticks: int | None = None
    open_trades: int | None = None
    token_expires_utc: str | None = None
    last_error: str | None = None
    halted_reason: str | None = None
    note: str | None = None


@dataclass
class Snapshot:
    supervisor_pid: int | None
    running: bool
    accounts: list[AccountStatus]
    left_open: list[str] = field(default_factory=list)  # the last stop's final lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "supervisor": {"pid": self.supervisor_pid, "running": self.running},
            "accounts": [asdict(a) for a in self.accounts],
            "left_open": list(self.left_open),
        }


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of the supervisor running on ``state_dir``, or None (stale pidfiles ignored)."""
    path = StateDir(state_dir).supervisor_pid
    pid = read_pid(path)
    if pid is None or not is_locked(path) or not looks_like_multirun(pid):
        return None
    return pid


def collect(runner: RunnerSpec, *, now: float | None = None) -> Snapshot:
    """Every account of ``runner``, merged from the supervisor's and the workers' files."""
    now = time.time() if now is None else now
    layout = StateDir(runner.state_dir)
    pid = supervisor_pid(layout.path)
    sup = read_json(layout.supervisor_json) or {}
    if pid is not None and sup.get("pid") != pid:
        sup = {}  # a new supervisor that has not written its file yet
    known = sup.get("accounts", {}) if isinstance(sup.get("accounts"), dict) else {}
    rows = []
    for spec in runner.accounts:
        worker = read_json(layout.account(spec.name).status) or {}
        entry = known.get(spec.name)
        row = merge(spec.name, entry, worker, running=pid is not None, now=now)
        if entry is None:
            row.note = "disabled" if not spec.enabled else "not started"
        rows.append(row)
    left = (
        [] if pid is not None else final_report.lines(final_report.from_json(sup.get("left_open")))
    )
    return Snapshot(pid, pid is not None, rows, left)


def merge(
    name: str,
    sup: dict[str, Any] | None,
    worker: dict[str, Any],
    *,
    running: bool,
    now: float,
) -> AccountStatus:
    """One account's row from its supervisor entry and its worker status file."""
    sup = sup or {}
    state = sup.get("state") or STOPPED
    pid = sup.get("pid")
    same_process = pid is not None and worker.get("pid") == pid
    if not running:
        state = FATAL if state == FATAL else STOPPED
        pid = None
    elif state in (STARTING, RUNNING) and same_process and worker.get("state") == HALTED:
        state = HALTED
    started = sup.get("started_utc") if pid else None
    return AccountStatus(
        name=name,
        state=state,
        pid=pid,
        started_utc=started,
        uptime_s=_age(started, now),
        restarts=int(sup.get("restarts") or 0),
        last_exit=sup.get("last_exit"),
        next_start_utc=sup.get("next_start_utc") if state == BACKOFF else None,
        last_tick_utc=worker.get("last_tick_utc"),
        next_tick_utc=_next_tick(worker) if state in (RUNNING, HALTED) else None,
        ticks=worker.get("ticks"),
        open_trades=worker.get("open_trades"),
        token_expires_utc=worker.get("token_expires_utc"),
        last_error=_last_error(sup, worker, same_process),
        halted_reason=worker.get("halted_reason"),
        note=sup.get("note"),
    )


def _last_error(sup: dict[str, Any], worker: dict[str, Any], same_process: bool) -> str | None:
    """The worker's own last error; else, until its current run has ticked, the error its
    previous run exited with (which the supervisor kept from its output)."""
    if worker.get("last_error"):
        return str(worker["last_error"])
    if same_process and worker.get("ticks"):
        return None
    return sup.get("last_error")


def _next_tick(worker: dict[str, Any]) -> str | None:
    """The worker's next tick; a status written during a tick may still show that tick's
    own time, then the next grid point after it is the next tick."""
    due, last, interval = (worker.get(k) for k in ("next_tick_utc", "last_tick_utc", "interval_s"))
    if not (due and last and isinstance(interval, int) and interval > 0):
        return due
    due_ts, last_ts = parse_iso(due), parse_iso(last)
    if due_ts is None or last_ts is None or due_ts > last_ts:
        return due
    return iso_ms((last_ts // interval + 1) * interval)


def _age(iso: str | None, now: float) -> float | None:
    moment = parse_iso(iso)
    return None if moment is None else max(0.0, now - moment)


# --- rendering ---------------------------------------------------------------------------

COLUMNS = (
    *("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST TICK", "NEXT TICK", "OPEN"),
    *("TOKEN EXPIRES", "LAST ERROR"),
)


def render_json(snapshot: Snapshot) -> str:
    return json.dumps(snapshot.to_dict(), indent=2)


def render_text(snapshot: Snapshot) -> str:
    head = (
        f"supervisor: running (pid {snapshot.supervisor_pid})"
        if snapshot.running
        else "supervisor: not running (last known details)"
    )
    cells = [list(COLUMNS)] + [_cells(a) for a in snapshot.accounts]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    if snapshot.left_open and not snapshot.running:
        lines += ["", "left open at the last stop:", *(f"  {x}" for x in snapshot.left_open)]
    return "\n".join([head, *lines])


def _cells(a: AccountStatus) -> list[str]:
    error = a.halted_reason if a.state == HALTED and a.halted_reason else a.last_error
    if not error and a.state == BACKOFF and a.next_start_utc:
        error = f"restart at {short_time(a.next_start_utc)}"
    if not error and a.last_exit and a.last_exit != "exit 0" and a.state != RUNNING:
        error = f"exited: {a.last_exit}"
    if not error and a.note:
        error = f"({a.note})"
    return [
        a.name,
        a.state,
        str(a.pid) if a.pid else "-",
        format_duration(a.uptime_s) if a.pid else "-",
        str(a.restarts),
        short_time(a.last_tick_utc),
        short_time(a.next_tick_utc),
        "-" if a.open_trades is None else str(a.open_trades),
        short_time(a.token_expires_utc, date=True),
        _short(error or "-"),
    ]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
