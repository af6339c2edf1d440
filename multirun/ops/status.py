"""``multirun status``: what each account is doing, merged from the state files.

Sources (all in ``runner.state_dir``):

- ``supervisor.pid``: locked by a running supervisor;
- ``supervisor.json``: the supervisor's view, rewritten after a state change (within 0.1 s)
  (per account: state, pid, started, restarts, last exit, next start);
- ``<name>/status.json``: the worker's view (ticks, trades, token, errors).

Rules: a worker reporting HALTED or PAUSED (on its pipe, else in its status.json) overrides
the supervisor's RUNNING (same pid); OVERDUE
(no heartbeat: the supervisor's watchdog) shows as it is; when no supervisor runs, every
account is STOPPED (FATAL stays FATAL) with its last known details, followed by the final
report of the last stop when it left trades open (``supervisor.json``'s ``left_open``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO, cast

from multirun.account import final_report, ownership
from multirun.config.specs import RunnerSpec
from multirun.core.clock import iso_ms, parse_iso, short_time
from multirun.core.errors import SupervisorError
from multirun.core.statedir import AccountDir, StateDir
from multirun.core.statefiles import (
    FleetRiskEntry,
    HeldPosition,
    ProcessEntry,
    SupervisorFile,
    WorkerStatus,
    read_supervisor,
    read_worker_status,
    worker_says,
)
from multirun.core.states import State
from multirun.ops import control_client, locate


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
    supervised: bool = False  # the running supervisor holds it (supervisor.json)
    # From the worker (multirun.account.pricing): held trades (side, volume, entry_price,
    # unrealized_pl), the server's NAV and unrealized P&L, our realized P&L today (UTC).
    positions: list[HeldPosition] | None = None
    nav: float | None = None
    unrealized_pl: float | None = None
    realized_pl_today: float | None = None
    # What needs a look (the worker's own words): orders whose fate is unknown, and the
    # guardrail refusing new opens now.
    uncertain_orders: list[str] | None = None
    blocked_by: str | None = None
    # PAUSED: why (an operator, a money limit, the trading hours; its pipe first) and since
    paused_reason: str | None = None
    paused_since_utc: str | None = None
    paused_until_utc: str | None = None  # a daily-loss pause lifts by itself then
    day_pnl: float | None = None  # P&L since the day's start, realized + unrealized
    equity: float | None = None  # the worker's NAV estimate (its max_drawdown's measure)
    drawdown: float | None = None  # the equity's fall from its peak (since start or resume)
    strategy: str | None = None
    journal_rebuilt: str | None = None  # its journal replaced a damaged one (set aside)


@dataclass
class Snapshot:
    supervisor_pid: int | None
    running: bool
    accounts: list[AccountStatus]
    left_open: list[str] = field(default_factory=list)  # the last stop's final lines
    config: str | None = None  # the config file the running supervisor was started from
    file_problem: str | None = None  # why the config file could not be read whole
    # the state directory the running supervisor lost (deleted under it): nothing it
    # holds can be shown, and nothing is known to run as it should
    lost_state_dir: str | None = None
    # the file-level money limits and the fleet's sums (the running supervisor's memory)
    risk: FleetRiskEntry | None = None

    def to_dict(
        self, as_dict: Callable[[AccountStatus], dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The document ``status --json`` prints; ``as_dict``: how a row becomes its dict
        (:func:`row_dict`'s; the dashboard's keeps the dict of a row it kept)."""
        as_dict = as_dict or row_dict
        return {
            "supervisor": {
                "pid": self.supervisor_pid,
                "running": self.running,
                "config": self.config,
            },
            "accounts": [as_dict(a) for a in self.accounts],
            "left_open": list(self.left_open),
            "file_problem": self.file_problem,
            "lost_state_dir": self.lost_state_dir,
            "risk": self.risk,
            "exit_code": self.exit_code(),
        }

    def exit_code(self) -> int:
        """supervisorctl's convention: 0 every enabled account the supervisor runs is
        RUNNING (or PAUSED: alive, doing what it was told), 3 some are not, 4 no
        supervisor runs."""
        if not self.running:
            return EXIT_NOT_RUNNING
        if self.lost_state_dir:
            return EXIT_SOME_NOT_RUNNING
        held = [a for a in self.accounts if a.supervised and a.note != DISABLED]
        fine = (State.RUNNING, State.PAUSED)
        return 0 if all(a.state in fine for a in held) else EXIT_SOME_NOT_RUNNING


def row_dict(row: AccountStatus) -> dict[str, Any]:
    """``row`` as a dict (its values are JSON already: no deep copy as ``asdict`` makes)."""
    return {name: getattr(row, name) for name in _ROW_FIELDS}


# read once: fields() per row was a tenth of a dashboard build
_ROW_FIELDS = tuple(f.name for f in fields(AccountStatus))


ASK_S = 2.0  # how long the running supervisor gets to answer `status` on its socket
EXIT_SOME_NOT_RUNNING = 3
EXIT_NOT_RUNNING = 4
DISABLED = "disabled"
IN_FILE_ONLY = "in the file, not running"
NOT_IN_FILE = "not in the file any more"
ORPHANED = "not in the file"


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of the supervisor running on ``state_dir``, or None (stale pidfiles ignored)."""
    found = locate.running(state_dir)
    return None if found is None else found.pid


def collect(runner: RunnerSpec, *, now: float | None = None) -> Snapshot:
    """Every account of ``runner``, merged from the supervisor's and the workers' files."""
    accounts = tuple((a.name, a.enabled) for a in runner.accounts)
    view = locate.FileView(runner.path, runner.state_dir, accounts, runner.stop_timeout_s)
    return collect_at(runner.state_dir, view, now=now)


def collect_at(
    state_dir: Path,
    file: locate.FileView | None = None,
    *,
    now: float | None = None,
    read_worker: Callable[[AccountDir], WorkerStatus] = read_worker_status,
    live: Callable[[Path, locate.Running], SupervisorFile] | None = None,
    account_names: Callable[[set[str]], list[str]] | None = None,
    row_of: Callable[..., AccountStatus] | None = None,
    running: Callable[[Path], locate.Running | None] = locate.running,
) -> Snapshot:
    """What runs on ``state_dir``: the supervisor's accounts first (what it actually runs),
    then accounts that are only in ``file`` (not running). Reads no config, imports no code.
    The dashboard, asking every 2 s, passes its own ways to read what rarely changes:
    ``read_worker``, a worker's status file (read again only when it changed); ``live``,
    the running supervisor's view (:func:`live_view`'s; asked ``unless`` it is the one
    kept); ``account_names``, the accounts with a journal besides those it is given
    (``StateDir.account_names``'s, less them: only the others are asked for theirs);
    ``row_of``, an account's row (:func:`merge`'s, made again only when its inputs
    changed; not changed here once made); ``running``, the supervisor found
    (:func:`locate.running`'s, its file parsed again only when it changed).
    """
    now = time.time() if now is None else now
    layout = StateDir(state_dir)
    found = running(state_dir)
    row_of = row_of or merge
    sup = (live or live_view)(state_dir, found) if found else read_supervisor(layout)
    known = sup.get("accounts", {}) if isinstance(sup.get("accounts"), dict) else {}
    in_file = dict(file.accounts) if file is not None and file.accounts is not None else None
    if found is not None:
        names = list(known) + [n for n in in_file or {} if n not in known]
    elif in_file is not None:
        names = list(in_file)
    else:
        names = list(known) or layout.account_names()
    rows = []
    for name in names:
        entry = known.get(name) if isinstance(known.get(name), dict) else None
        worker = read_worker(layout.account(name))
        supervised = found is not None and entry is not None
        placed = _placed(name, entry, found is not None, in_file)
        row = row_of(
            name,
            entry,
            worker,
            running=found is not None,
            now=now,
            supervised=supervised,
            placed=placed,
        )
        rows.append(row)
    if in_file is not None:  # journals of accounts renamed or removed: still holding money
        shown = set(names)
        if account_names is None:
            others = [n for n in layout.account_names() if n not in shown]
        else:
            others = account_names(shown)
        rows += orphan_rows(layout, [*names, *others], shown, now, read_worker)
    left = [] if found else final_report.lines(final_report.from_json(sup.get("left_open")))
    config = found.config if found else None
    problem = file.problem if file is not None else None
    pid = found.pid if found else None
    lost = str(state_dir) if found is not None and found.unlisted else None
    risk = sup.get("risk") if found is not None and isinstance(sup.get("risk"), dict) else None
    return Snapshot(pid, found is not None, rows, left, config, problem, lost, risk)


def _placed(
    name: str, entry: ProcessEntry | None, running: bool, in_file: dict[str, bool] | None
) -> str | None:
    """The note an account's place gives its row when its entry has none: no entry (only
    in the file, not started, disabled), or not in the file any more."""
    if entry is None:
        enabled = True if in_file is None else in_file.get(name, True)
        return (IN_FILE_ONLY if running else "not started") if enabled else DISABLED
    if in_file is not None and name not in in_file and running:
        return NOT_IN_FILE
    return None


def live_view(state_dir: Path, found: locate.Running) -> SupervisorFile:
    """The running supervisor's view from its memory (its control reply: true when no file
    can be written, a full disk), else from its ``supervisor.json``."""
    try:
        reply = control_client.request(state_dir, {"cmd": "status"}, timeout_s=ASK_S)
    except (SupervisorError, OSError):
        return found.data
    if not reply.get("ok") or reply.get("pid") != found.pid:
        return found.data
    return cast(SupervisorFile, reply)


def orphan_rows(
    layout: StateDir,
    candidates: list[str],
    shown: set[str],
    now: float,
    read_worker: Callable[[AccountDir], WorkerStatus] = read_worker_status,
) -> list[AccountStatus]:
    """A row for each account directory not otherwise shown whose journal still holds
    trades (an account renamed or removed from the file): never out of sight."""
    rows = []
    for name in sorted(set(candidates) - shown):
        held = ownership.held_trades(layout.account(name).journal, name)
        if held:
            row = merge(name, None, read_worker(layout.account(name)), running=False, now=now)
            row.note = f"{ORPHANED}, {len(held)} trade(s) held: multirun close {name}"
            rows.append(row)
    return rows


def merge(
    name: str,
    sup: ProcessEntry | None,
    worker: WorkerStatus,
    *,
    running: bool,
    now: float,
    supervised: bool = False,
    placed: str | None = None,
) -> AccountStatus:
    """One account's row from its supervisor entry and its worker status file;
    ``supervised``: the running supervisor holds it; ``placed``: the note its place in the
    fleet gives it when its entry has none (:func:`_placed`)."""
    sup = sup or {}
    state = sup.get("state") or State.STOPPED
    pid = sup.get("pid")
    same_process = pid is not None and worker.get("pid") == pid
    if not running:
        state = State.FATAL if state == State.FATAL else State.STOPPED
        pid = None
    elif state in (State.STARTING, State.RUNNING):
        state = worker_says(sup, worker) or state
    started = sup.get("started_utc") if pid else None
    return AccountStatus(
        name=name,
        state=state,
        pid=pid,
        started_utc=started,
        uptime_s=_age(started, now),
        restarts=int(sup.get("restarts") or 0),
        last_exit=sup.get("last_exit"),
        next_start_utc=sup.get("next_start_utc") if state == State.BACKOFF else None,
        last_tick_utc=worker.get("last_tick_utc"),
        next_tick_utc=_next_tick(worker) if state in TICKING else None,
        ticks=worker.get("ticks"),
        open_trades=worker.get("open_trades"),
        token_expires_utc=worker.get("token_expires_utc"),
        last_error=_last_error(sup, worker, same_process),
        halted_reason=_halted_reason(sup, worker),
        note=(sup.get("note") or placed) if placed else sup.get("note"),
        supervised=supervised,
        positions=worker.get("positions"),
        nav=worker.get("nav"),
        unrealized_pl=worker.get("unrealized_pl"),
        realized_pl_today=worker.get("realized_pl_today"),
        uncertain_orders=[str(ref) for ref in worker.get("uncertain_orders") or ()],
        blocked_by=worker.get("blocked_by"),
        paused_reason=_paused_reason(sup, worker) if state == State.PAUSED else None,
        paused_since_utc=worker.get("paused_since_utc") if state == State.PAUSED else None,
        paused_until_utc=worker.get("paused_until_utc") if state == State.PAUSED else None,
        day_pnl=worker.get("day_pnl"),
        equity=worker.get("equity"),
        drawdown=worker.get("drawdown"),
        strategy=worker.get("strategy"),
        journal_rebuilt=worker.get("journal_rebuilt"),
    )


TICKING = (State.RUNNING, State.HALTED, State.PAUSED)


def _paused_reason(sup: ProcessEntry, worker: WorkerStatus) -> str | None:
    """Why it is paused: its pipe's word first (its status file may be stale)."""
    if sup.get("worker_state") == State.PAUSED and sup.get("worker_reason"):
        return sup.get("worker_reason")
    return worker.get("paused_reason")


def _last_error(sup: ProcessEntry, worker: WorkerStatus, same_process: bool) -> str | None:
    """The worker's own last error; else, until its current run has ticked, the error its
    previous run exited with (which the supervisor kept from its output)."""
    if worker.get("last_error"):
        return str(worker["last_error"])
    if same_process and worker.get("ticks"):
        return None
    return sup.get("last_error")


def _halted_reason(sup: ProcessEntry, worker: WorkerStatus) -> str | None:
    """Why it halted: what its worker said on its pipe (its status file may be stale: a
    full disk), else what its status file says."""
    if sup.get("worker_state") == State.HALTED and sup.get("worker_reason"):
        return sup.get("worker_reason")
    return worker.get("halted_reason")


def _next_tick(worker: WorkerStatus) -> str | None:
    """The worker's next tick; a status written during a tick may still show that tick's
    own time, then the next grid point after it is the next tick."""
    due, last = worker.get("next_tick_utc"), worker.get("last_tick_utc")
    interval = worker.get("interval_s")
    if not (due and last and isinstance(interval, int) and interval > 0):
        return due
    due_ts, last_ts = parse_iso(due), parse_iso(last)
    if due_ts is None or last_ts is None or due_ts > last_ts:
        return due
    return iso_ms((last_ts // interval + 1) * interval)


def uptime(row: AccountStatus, now: float) -> float | None:
    """``row``'s uptime at ``now`` (the only field of :func:`merge`'s row that moves
    while its inputs do not)."""
    return _age(row.started_utc, now)


def _age(iso: str | None, now: float) -> float | None:
    moment = parse_iso(iso)
    return None if moment is None else max(0.0, now - moment)


# --- rendering ---------------------------------------------------------------------------

COLUMNS = (
    *("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST TICK", "NEXT TICK", "POS"),
    *("NAV", "P&L TODAY", "TOKEN EXPIRES", "LAST ERROR"),
)


def render_json(snapshot: Snapshot) -> str:
    return json.dumps(snapshot.to_dict(), indent=2)


def render_text(snapshot: Snapshot) -> str:
    head = (
        f"supervisor: running (pid {snapshot.supervisor_pid})"
        + (f", started from {snapshot.config}" if snapshot.config else "")
        if snapshot.running
        else "supervisor: not running (last known details)"
    )
    if snapshot.lost_state_dir:
        head += (
            f"\nwarning: its state directory {snapshot.lost_state_dir} is gone: what its "
            "accounts hold cannot be read; `multirun stop` stops it"
        )
    if snapshot.file_problem:
        head += f"\nnote: the config file does not parse now ({_short(snapshot.file_problem)})"
    limits = snapshot.risk and (
        snapshot.risk.get("max_daily_loss") is not None
        or snapshot.risk.get("max_drawdown") is not None
    )
    if snapshot.running and snapshot.risk and limits:
        head += "\n" + risk_line(snapshot.risk)
    cells = [list(COLUMNS)] + [_cells(a) for a in snapshot.accounts]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    if snapshot.left_open and not snapshot.running:
        lines += ["", "left open at the last stop:", *(f"  {x}" for x in snapshot.left_open)]
    return "\n".join([head, *lines])


def risk_line(risk: FleetRiskEntry) -> str:
    """``risk (all accounts): day P&L -412.30 (limit -1500), equity 19,588.00; drawdown
    412.00 of 3000``, then the breach acted on, if any (the file's ``risk:``)."""
    limit = risk.get("max_daily_loss")
    drawdown = risk.get("max_drawdown")
    pnl, equity, peak = risk.get("day_pnl"), risk.get("equity"), risk.get("peak")
    parts = [f"day P&L {'-' if pnl is None else f'{pnl:+.2f}'}"
             + (f" (limit -{limit:g})" if limit is not None else "")]  # fmt: skip
    if equity is not None:
        fall = f"; drawdown {peak - equity:.2f} of {drawdown:g}" if drawdown and peak else ""
        parts.append(f"equity {equity:,.2f}{fall}")
    line = "risk (all accounts): " + ", ".join(parts)
    if risk.get("breach"):
        line += f"\nBREACH: {risk['breach']} at {short_time(risk.get('breach_utc'))}: " + (
            f"{risk.get('on_breach')} sent to every account; `multirun resume --all` to go on"
        )
    return line


def _cells(a: AccountStatus) -> list[str]:
    error = a.halted_reason if a.state == State.HALTED and a.halted_reason else a.last_error
    if a.state == State.PAUSED:
        lifts = a.paused_until_utc  # a daily loss: the next day's start
        until = f" (lifts {short_time(lifts, date=True)})" if lifts else ""
        error = f"paused: {a.paused_reason or 'no reason given'}{until}"
    if not error and a.state == State.BACKOFF and a.next_start_utc:
        error = f"restart at {short_time(a.next_start_utc)}"
    if not error and a.last_exit and a.last_exit != "exit 0" and a.state != State.RUNNING:
        error = f"exited: {a.last_exit}"
    if not error and a.note:
        error = f"({a.note})"
    if not error and a.journal_rebuilt:
        error = "(journal rebuilt from the server: a damaged one set aside)"
    return [
        a.name,
        a.state,
        str(a.pid) if a.pid else "-",
        format_duration(a.uptime_s) if a.pid else "-",
        str(a.restarts),
        short_time(a.last_tick_utc),
        short_time(a.next_tick_utc),
        _position(a),
        "-" if a.nav is None else f"{a.nav:,.2f}",
        "-" if a.realized_pl_today is None else f"{a.realized_pl_today:+.2f}",
        short_time(a.token_expires_utc, date=True),
        _short(error or "-"),
    ]


def _position(a: AccountStatus) -> str:
    """``BUY 0.01 @ 97012.5 +1.20`` (one trade), ``2 trades +0.30``, ``-`` (none); the
    count alone from a worker that does not write positions."""
    if not a.positions:
        return str(a.open_trades) if a.open_trades else "-"
    pls = [p.get("unrealized_pl") for p in a.positions]
    pl = "" if None in pls else f" {sum(float(x) for x in pls if x is not None):+.2f}"
    if len(a.positions) > 1:
        return f"{len(a.positions)} trades{pl}"
    (one,) = a.positions
    entry = one.get("entry_price")
    at = "" if entry is None else f" @ {entry:g}"
    return f"{one.get('side')} {one.get('volume'):g}{at}{pl}"


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


# --- the command -------------------------------------------------------------------------


def run(
    config: Path | None,
    *,
    state_dir: Path | None = None,
    json_output: bool = False,
    watch: bool = False,
    stream: TextIO | None = None,
    interval_s: float = 1.0,
) -> int:
    """``multirun status``: print what runs; returns 0, 3 or 4 (see :meth:`Snapshot.exit_code`).

    ``watch``: redraw every ``interval_s`` until Ctrl-C (in place on a terminal, repeated
    tables otherwise), then return 0. Never loads the config: see :mod:`multirun.ops.locate`.
    """
    out = sys.stdout if stream is None else stream
    where = locate.target(config, state_dir)
    if where.foreign:
        print(
            f"multirun: {where.foreign}: not showing it (use `multirun status "
            f"{where.running.config if where.running else ''}` or --state-dir)",
            file=sys.stderr,
        )
        return EXIT_NOT_RUNNING
    render = render_json if json_output else render_text
    if not watch:
        snapshot = collect_at(where.state_dir, where.file)
        out.write(render(snapshot) + "\n")
        out.flush()
        return snapshot.exit_code()
    tty = bool(getattr(out, "isatty", None) and out.isatty())
    wake = threading.Event()
    try:
        while True:
            text = render(collect_at(where.state_dir, locate.refresh(where.file)))
            stamp = f"every {interval_s:g}s, Ctrl-C to quit; {time.strftime('%H:%M:%S')}"
            out.write(
                ("\033[H\033[2J" if tty else "") + f"{text}\n({stamp})\n" + ("" if tty else "\n")
            )
            out.flush()
            wake.wait(interval_s)
    except KeyboardInterrupt:
        return 0
