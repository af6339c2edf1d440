"""What the notifier tells: events found by comparing the state dir now with a second ago.

``supervisor.json`` is the process-level truth (FATAL, BACKOFF and its restarts, OVERDUE),
each account's ``status.json`` the tick-level one (HALTED, uncertain orders, orders, the
orders the server refused, P&L); a worker reporting HALTED overrides the supervisor's
RUNNING, as ``status`` does.
An account's alert state is told once when it is entered; ``recovered`` when it is
RUNNING again. PAUSED (issue 24) is told as ``risk_breach`` when a money limit of its own
paused it, ``paused`` when an operator did (a pause for the trading hours is the plan,
not news: not told), and ``resumed`` when it is RUNNING again; the file-level limit's
breach (``supervisor.json``'s ``risk.breach``) is one ``risk_breach`` for the whole
fleet, not one per account. The journals tell what a stop left open (:func:`left_open`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from multirun.account import final_report
from multirun.account.worker import OUTSIDE_HOURS
from multirun.config.specs import AccountSpec
from multirun.core import statefiles
from multirun.core.clock import iso_ms
from multirun.core.procutil import ChangedFiles
from multirun.core.statedir import StateDir
from multirun.core.states import State

BACKOFF_AFTER = 3  # BACKOFF is told once an account has been restarted this many times
ALERT_STATES = (State.FATAL, State.HALTED, State.OVERDUE, State.BACKOFF)
# A PAUSED reason naming a money limit (the worker's own: "daily loss 312.40 > 300", the
# fleet's: "fleet daily loss ..."), and the trading hours' (no alert: the plan)
LIMIT_WORDS = ("daily loss", "drawdown")
FLEET = "fleet "
# What an account's alerts are made of in its status.json: all that :meth:`Watcher.account`
# is given of it. The file is rewritten after every tick, mostly with none of these changed
# (its time, its P&L): then a look at the account would find nothing new, and is skipped.
ALERT_FIELDS = (
    *("pid", "state", "halted_reason", "paused_reason"),
    *("uncertain_orders", "orders_refused", "last_error"),
)
# an account's last look: its entry, its status, that status's ALERT_FIELDS
Look = tuple[Mapping[str, Any], Mapping[str, Any], tuple[Any, ...]]


def pause_alert(reason: str | None) -> str | None:
    """The event a PAUSED account with ``reason`` is told as: ``risk_breach`` (a limit of
    its own), ``paused`` (an operator, a flatten), or None (the fleet's limit: told once
    for all; the trading hours: the plan)."""
    text = (reason or "").lower()
    if text.startswith(FLEET) or text.startswith(OUTSIDE_HOURS):
        return None
    return "risk_breach" if any(word in text for word in LIMIT_WORDS) else "paused"


@dataclass(frozen=True)
class Event:
    """One thing to tell: its kind (one of ``multirun.services.notify.EVENTS``) and its text."""

    kind: str
    text: str
    account: str | None = None
    state: str | None = None
    time: float = field(default_factory=time.time)
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "account": self.account,
            "state": self.state,
            "text": self.text,
            "time_utc": iso_ms(self.time),
            **dict(self.data),
        }


def utc_day(seconds: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def account_state(proc: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    """The account's state: the supervisor's, or HALTED or PAUSED when its running worker
    says so (:func:`~multirun.core.statefiles.worker_says`, as ``status`` shows)."""
    state = proc.get("state")
    if state in (State.STARTING, State.RUNNING):
        said = statefiles.worker_says(
            cast(statefiles.ProcessEntry, proc), cast(statefiles.WorkerStatus, status)
        )
        return said or state
    return state if isinstance(state, str) else None


class Watcher:
    """Reads the state dir on each :meth:`poll` and returns what changed since the last."""

    def __init__(
        self,
        layout: StateDir,
        names: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        backoff_after: int = BACKOFF_AFTER,
        processes: statefiles.ProcessEntries | None = None,
        risk: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.layout = layout
        # each account's process entry: supervisor.json's, or run-account's own
        self.processes = processes or functools.partial(statefiles.supervised, self.layout)
        # the file-level limit's state (``risk``), looked at after ``processes``: by
        # default supervisor.json's, parsed again only when the file changed (a poll
        # parsing the whole file each second for it was a third of the poll's CPU)
        self.risk = risk or self.file_risk
        self.names = list(names)
        self.watched = set(self.names)  # the same names, looked up (a list: 20 us a poll)
        self.clock = clock
        self.backoff_after = backoff_after
        self.alerted: dict[str, str] = {}  # account -> the alert state last told
        self.uncertain: dict[str, set[str]] = {}
        self.refusals: dict[str, int] = {}  # orders refused, as last counted
        self.statuses: dict[str, Mapping[str, Any]] = {}  # the last status.json read
        self.paused: dict[str, str] = {}  # account -> the PAUSED reason last seen
        self.fleet_breach: str | None = None  # the file-level limit's breach last told
        self.day = utc_day(clock())
        self.told_previous = False  # previous_died: told at the first poll
        self.statuses_read = ChangedFiles()
        self.paths: dict[str, Path] = {}  # account -> its status.json
        # what each account's last look was made of: its entry and its status (the same
        # objects while neither changed), and that status's ALERT_FIELDS; the same again,
        # the look would find nothing new
        self.looked_at: dict[str, Look] = {}

    def poll(self) -> list[Event]:
        now = self.clock()
        events: list[Event] = []
        if utc_day(now) != self.day:
            events.append(self.summary(now))
            self.day = utc_day(now)
        procs = self.processes()
        events.extend(self.previous_died(now))
        events.extend(self.fleet(now))
        # accounts a reload added are in the supervisor's entries: watched from then on
        added = [name for name in procs if name not in self.watched]
        if added:
            self.names += added
            self.watched.update(added)
        for name in self.names:
            status = self.statuses_read.read(self._path(name))
            proc = procs.get(name) or {}
            looked_at = self.looked_at.get(name)
            if looked_at is None or looked_at[0] is not proc or looked_at[1] is not status:
                # (the same inputs again would tell nothing: each told change is kept)
                fields = tuple(status.get(key) for key in ALERT_FIELDS)
                if looked_at is None or looked_at[0] is not proc or looked_at[2] != fields:
                    seen = dict(zip(ALERT_FIELDS, fields, strict=True))
                    events.extend(self.account(name, proc, seen, now))
                self.looked_at[name] = (proc, status, fields)
            if status:
                self.statuses[name] = status
        return events

    def previous_died(self, now: float) -> list[Event]:
        """Once, at the first poll: what a supervisor that died without a stop left, as
        the new one found it (``supervisor.json``'s ``previous_died``; the dead one's
        notifier died with it)."""
        if self.told_previous:
            return []
        self.told_previous = True
        current = statefiles.read_supervisor(self.layout)
        found = current.get("previous_died") or []
        if not found or current.get("pid") != os.getppid():  # our supervisor's word only
            return []
        text = "\n".join(found)
        return [Event("supervisor_died", text, None, None, now, {"lines": list(found)})]

    def account(
        self, name: str, proc: Mapping[str, Any], status: Mapping[str, Any], now: float
    ) -> list[Event]:
        events = []
        state = account_state(proc, status)
        told = self.alerted.get(name)
        restarts = int(proc.get("restarts") or 0)
        alert = state in ALERT_STATES and (state != State.BACKOFF or restarts >= self.backoff_after)
        if alert and state != told:
            assert state is not None
            self.alerted[name] = state
            events.append(
                Event(
                    state.lower(),
                    why(name, state, proc, status),
                    name,
                    state,
                    now,
                    {"restarts": restarts},
                )
            )
        elif state == State.RUNNING and told is not None:
            del self.alerted[name]
            text = f"{name}: recovered: RUNNING again (was {told})"
            events.append(Event("recovered", text, name, state, now, {"was": told}))
        events.extend(self.pause(name, state, proc, status, now))
        events.extend(self.refused(name, state, status, now))
        refs = {str(r) for r in status.get("uncertain_orders") or ()}
        new = sorted(refs - self.uncertain.get(name, set()))
        self.uncertain[name] = refs
        if new:
            text = (
                f"{name}: {len(new)} order(s) uncertain (sent, not confirmed; the account opens "
                f"nothing until settled): {', '.join(new)}"
            )
            events.append(Event("uncertain", text, name, state, now, {"order_refs": new}))
        return events

    def pause(
        self,
        name: str,
        state: str | None,
        proc: Mapping[str, Any],
        status: Mapping[str, Any],
        now: float,
    ) -> list[Event]:
        """PAUSED entered (or paused again for another reason): ``risk_breach`` or
        ``paused``; left for RUNNING: ``resumed``."""
        was = self.paused.get(name)
        if state != State.PAUSED:
            if was is None:
                return []
            del self.paused[name]
            if state != State.RUNNING or pause_alert(was) is None:
                return []
            text = f"{name}: resumed: RUNNING again (was PAUSED: {was or 'no reason given'})"
            return [Event("resumed", text, name, state, now, {"was": was})]
        said = proc.get("worker_reason") if proc.get("worker_state") == State.PAUSED else None
        reason = str(said or status.get("paused_reason") or "")
        if was == reason:
            return []
        self.paused[name] = reason
        kind = pause_alert(reason)
        if kind is None:
            return []
        text = f"{name}: PAUSED: {reason or 'no reason given'}; nothing opens until resumed"
        return [Event(kind, text, name, state, now, {"reason": reason})]

    def fleet(self, now: float) -> list[Event]:
        """The file-level limit's breach (the supervisor's ``risk.breach``): told once."""
        risk = self.risk()
        breach = risk.get("breach")
        if breach == self.fleet_breach:
            return []
        self.fleet_breach = breach
        if not breach:
            return []
        text = f"all accounts: {breach}: {risk.get('on_breach') or 'pause'} sent to every account"
        data = {key: risk.get(key) for key in ("day_pnl", "equity", "peak", "on_breach")}
        return [Event("risk_breach", text, None, State.PAUSED, now, {"reason": breach, **data})]

    def refused(
        self, name: str, state: str | None, status: Mapping[str, Any], now: float
    ) -> list[Event]:
        """Orders the server refused, as the worker counts them (its status.json's
        ``orders_refused``); a new worker starts its count at 0."""
        total = int(status.get("orders_refused") or 0)
        before = self.refusals.get(name, 0)
        self.refusals[name] = total
        if total <= before:
            return []
        why = status.get("last_error") or "no reason given"
        text = f"{name}: {total - before} order(s) refused by the server: {why}"
        return [Event("rejected", text, name, state, now, {"refused_total": total})]

    def file_risk(self) -> Mapping[str, Any]:
        """``supervisor.json``'s ``risk`` ({} when none)."""
        return self.statuses_read.read(self.layout.supervisor_json).get("risk") or {}

    def _path(self, name: str) -> Path:
        if name not in self.paths:
            self.paths[name] = self.layout.account(name).status
        return self.paths[name]

    def summary(self, now: float) -> Event:
        """The daily summary: per account, from the last status.json read (before 00:00)."""
        rows, lines = {}, [f"daily summary for {self.day} (UTC)"]
        for name in self.names:
            st = self.statuses.get(name, {})
            row = {
                key: st.get(key)
                for key in ("state", "orders_sent", "open_trades", "realized_pl_today", "nav")
            }
            rows[name] = row
            lines.append(
                f"{name}: {row['state'] or 'not started'}, {row['orders_sent'] or 0} order(s) "
                f"sent since its start, realized P&L today {fmt(row['realized_pl_today'])}, "
                f"NAV {fmt(row['nav'])}, {row['open_trades'] or 0} open trade(s)"
            )
        return Event("daily_summary", "\n".join(lines), None, None, now, {"accounts": rows})


def why(name: str, state: str, proc: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """One line on an account entering an alert state."""
    if state == State.HALTED:
        reason = status.get("halted_reason") or proc.get("worker_reason") or "no reason given"
        return f"{name}: HALTED: {reason}"
    if state == State.OVERDUE:
        return f"{name}: OVERDUE: no sign of life (heartbeat); killed and restarted if silent"
    detail = "; ".join(str(x) for x in (proc.get("last_exit"), proc.get("last_error")) if x)
    detail = f" ({detail})" if detail else ""
    if state == State.BACKOFF:
        return f"{name}: BACKOFF after {proc.get('restarts')} restart(s){detail}"
    return f"{name}: FATAL: not restarted{detail}"


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def left_open(layout: StateDir, accounts: Sequence[AccountSpec]) -> Event | None:
    """What the journals still hold at a stop, as one event (None: nothing held)."""
    leftovers = [
        final_report.journal_leftovers(
            layout.account(a.name).journal, a.order_ref_prefix, a.name, a.on_stop
        )
        for a in accounts
    ]
    lines = final_report.lines(leftovers)
    if not lines:
        return None
    data = {"accounts": final_report.to_json({x.account: x for x in leftovers})}
    return Event("left_open", "the stop left trades open:\n" + "\n".join(lines), data=data)
