"""Judging one chaos stop: the simulator's ledger against the supervisor's output and journals.

After a supervisor exits, :func:`judge` reads what it left behind: the trades of its
accounts still OPEN (or PENDING) on the server, the ones its final output names, its
journals (read-only) and any of its processes still alive. :class:`Tally` adds the
stops up and prints the figures ``bench/chaos.py`` reports.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPEN_STATES = ("OPEN", "PENDING")
# A final line naming trades the stop did not close (or kept): the supervisor's report, the
# sweep's "N trade(s) left open: ..." error line, and wordings close to them.
REPORT_LINE = re.compile(
    r"left open|still open|remain(?:s|ed)? open|kept|not closed|unconfirmed|"
    r"could not (?:be )?(?:close|confirm|journal)",
    re.IGNORECASE,
)
WORD = re.compile(r"[A-Za-z0-9_.:-]+")
PROC = Path("/proc")


@dataclass
class StopResult:
    """What one stop left behind."""

    index: int
    kind: str  # where the stop was aimed: backoff, reconcile, mid-tick, anytime
    signal: str  # SIGTERM or SIGINT
    accounts: int
    exit: str  # the supervisor's exit status, or "hung" (the bench had to SIGKILL it)
    seconds: float  # from the stop signal to the supervisor's exit
    chaos: list[str] = field(default_factory=list)  # what was done to the workers first
    states: list[str] = field(default_factory=list)  # the accounts' states at the stop
    orders: int = 0
    duplicates: list[str] = field(default_factory=list)
    left_open: list[str] = field(default_factory=list)  # orderRefs open on the server
    unreported: list[str] = field(default_factory=list)  # ... and not named in the output
    never_journaled: list[str] = field(default_factory=list)  # on the server, not journaled
    ghosts: list[str] = field(default_factory=list)  # journaled tradeIDs the server never had
    orphans: list[int] = field(default_factory=list)  # pids alive after the supervisor exited
    note: str = ""

    @property
    def lost(self) -> int:
        return len(self.never_journaled) + len(self.ghosts)

    @property
    def open_with_exit_0(self) -> bool:
        return bool(self.left_open) and self.exit == "0"

    def line(self) -> str:
        chaos = ",".join(self.chaos) or "-"
        states = ",".join(self.states) or "-"
        text = (
            f"stop {self.index:4d} {self.kind:9s} {self.signal:7s} {self.accounts} acct "
            f"[{chaos}] at [{states}] exit {self.exit:>4s} in {self.seconds:5.1f} s; "
            f"orders {self.orders}, left open {len(self.left_open)}, "
            f"unreported {len(self.unreported)}"
        )
        extra = [
            f"duplicates {self.duplicates}" if self.duplicates else "",
            f"never journaled {self.never_journaled}" if self.never_journaled else "",
            f"ghosts {self.ghosts}" if self.ghosts else "",
            f"orphans {self.orphans}" if self.orphans else "",
            f"UNREPORTED {self.unreported}" if self.unreported else "",
            self.note,
        ]
        return "; ".join([text, *[e for e in extra if e]])


# --- what the output names ------------------------------------------------------------------


def named_in_output(text: str, names: Iterable[str]) -> tuple[set[str], set[tuple[str, str]]]:
    """orderRefs, and (account, tradeID) pairs, that the output's report lines name.

    A trade counts as named when its orderRef appears on a report line, or its tradeID as
    a whole word on a report line that also names its account.
    """
    refs: set[str] = set()
    ids: set[tuple[str, str]] = set()
    accounts = list(names)
    for line in text.splitlines():
        if not REPORT_LINE.search(line):
            continue
        words = set(WORD.findall(line))
        words |= {w.strip(".:,;") for w in words}
        refs |= {w for w in words if w.startswith("mr-")}
        for account in accounts:
            if account in words or f"{account}:" in line:
                ids |= {(account, w) for w in words if w.isdigit()}
    return refs, ids


# --- the journal, read-only ----------------------------------------------------------------


def journal_rows(path: Path) -> list[dict[str, Any]]:
    """Every order row of one account's journal (none when it does not exist)."""
    if not path.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT order_ref, state, trade_id FROM orders")]
    except sqlite3.Error:
        return []


# --- processes still alive --------------------------------------------------------------------


def marked_pids(mark: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``CHAOS_MARK=<mark>``."""
    needle = f"CHAOS_MARK={mark}".encode()
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def orphans(mark: str, grace_s: float = 3.0) -> list[int]:
    """Processes of this supervisor still alive ``grace_s`` after it exited; SIGKILLed."""
    deadline = time.monotonic() + grace_s
    alive = marked_pids(mark)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)  # polling /proc for them to go: no event to wait on
        alive = marked_pids(mark)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


# --- the verdict ------------------------------------------------------------------------------


def judge(
    result: StopResult,
    ledger: Sequence[dict[str, Any]],
    accountids: dict[str, str],
    output: str,
    journals: dict[str, Path],
) -> StopResult:
    """Fill ``result`` from the ledger (``accountids``: account name -> accountid)."""
    by_id = {v: k for k, v in accountids.items()}
    ours = [o for o in ledger if o.get("accountid") in by_id]
    result.orders = len(ours)
    counts = collections.Counter(str(o["orderRef"]) for o in ours)
    result.duplicates = sorted(r for r, n in counts.items() if n > 1)
    refs, ids = named_in_output(output, accountids)
    for order in ours:
        if order["status"] not in OPEN_STATES:
            continue
        ref, account = str(order["orderRef"]), by_id[str(order["accountid"])]
        result.left_open.append(ref)
        if ref not in refs and (account, str(order["tradeID"])) not in ids:
            result.unreported.append(ref)
    on_server = {str(o["tradeID"]) for o in ours}
    for name, path in journals.items():
        rows = journal_rows(path)
        journaled = {str(r["order_ref"]) for r in rows}
        mine = [o for o in ours if by_id[str(o["accountid"])] == name]
        result.never_journaled += [
            str(o["orderRef"]) for o in mine if o["orderRef"] not in journaled
        ]
        result.ghosts += [
            f"{name}:{r['trade_id']}"
            for r in rows
            if r["trade_id"] not in (None, "") and str(r["trade_id"]) not in on_server
        ]
    return result


@dataclass
class Tally:
    """Every stop's result, and the figures they add up to."""

    results: list[StopResult] = field(default_factory=list)

    def add(self, result: StopResult) -> None:
        self.results.append(result)

    def figures(self) -> dict[str, Any]:
        rs = self.results
        return {
            "stops": len(rs),
            "orders": sum(r.orders for r in rs),
            "duplicates": sum(len(r.duplicates) for r in rs),
            "lost": sum(r.lost for r in rs),
            "left_open": sum(len(r.left_open) for r in rs),
            "unreported_left_open": sum(len(r.unreported) for r in rs),
            "stops_with_unreported": sum(1 for r in rs if r.unreported),
            "open_with_exit_0": sum(1 for r in rs if r.open_with_exit_0),
            "orphans": sum(len(r.orphans) for r in rs),
            "hung": sum(1 for r in rs if r.exit == "hung"),
            "exit_codes": dict(sorted(collections.Counter(r.exit for r in rs).items())),
        }

    def report(self, wall_s: float, header: str = "") -> str:
        f = self.figures()
        stops = max(1, f["stops"])
        kinds: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
        for r in self.results:
            kinds[r.kind][0] += 1
            kinds[r.kind][1] += len(r.left_open)
            kinds[r.kind][2] += len(r.unreported)
        per_kind = ", ".join(
            f"{k} {n} (left open {o}, unreported {u})" for k, (n, o, u) in sorted(kinds.items())
        )
        exits = " ".join(f"{code}:{n}" for code, n in f["exit_codes"].items())
        lines = [
            header,
            f"stops:                 {f['stops']}  ({per_kind})",
            f"orders in ledger:      {f['orders']}",
            f"duplicates:            {f['duplicates']}  (orderRefs seen twice in the ledger)",
            f"lost:                  {f['lost']}  (on the server but never journaled, "
            "or journaled but never on the server)",
            f"left open:             {f['left_open']}  ({f['left_open'] / stops:.2f} per stop)",
            f"unreported-left-open:  {f['unreported_left_open']}  "
            f"({f['unreported_left_open'] / stops:.2f} per stop; "
            f"{f['stops_with_unreported']} of {f['stops']} stops)",
            f"left open, exit 0:     {f['open_with_exit_0']} stops",
            f"orphans:               {f['orphans']}",
            f"supervisor hung:       {f['hung']}  (SIGKILLed by the bench)",
            f"exit codes:            {exits}",
            f"wall time:             {wall_s:.1f} s",
        ]
        return "\n".join(line for line in lines if line)

    @property
    def ok(self) -> bool:
        f = self.figures()
        keys = ("duplicates", "lost", "unreported_left_open", "open_with_exit_0", "orphans", "hung")
        return f["stops"] > 0 and not any(f[k] for k in keys)
