"""What a supervisor that died left, told by the next one as its first lines (issue 23, case 9).

A supervisor SIGKILLed (or whose machine went down) writes no final report: its workers
exit within 2 s closing nothing (as designed: no orphan trades on), its notifier dies with
it, and ``on_stop`` is applied by nobody. Its ``supervisor.json`` then lacks ``stopped_utc``
(written by every stop, :meth:`multirun.supervisor.arbiter.Arbiter.save_final`). The next
start reads that file before writing its own (:func:`died`), waits a moment for the dead
one's workers to be gone (they hold the account locks the new workers take), and says what
the journals hold: each account this run starts adopts its trades from its journal;
another's are named with the command that closes them. The lines are kept in the new
``supervisor.json`` (``previous_died``), where the notifier finds them to tell.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from multirun.account.ownership import held_trades
from multirun.core import procutil, statefiles
from multirun.core.statedir import StateDir

WORKERS_GONE_S = 3.0  # a dead supervisor's workers exit within 2 s (account.process)


def died(layout: StateDir, own_pid: int) -> statefiles.SupervisorFile | None:
    """The previous ``supervisor.json`` when its run ended without a stop, else None."""
    previous = statefiles.read_supervisor(layout)
    pid = previous.get("pid")
    if not previous or previous.get("stopped_utc") or pid == own_pid:
        return None
    return previous


def wait_workers_gone(
    previous: statefiles.SupervisorFile, timeout_s: float = WORKERS_GONE_S
) -> None:
    """Until the dead supervisor's workers have exited (at most ``timeout_s``)."""
    entries = (previous.get("accounts") or {}).values()
    pids = [pid for pid in (e.get("pid") for e in entries) if isinstance(pid, int)]
    deadline = time.monotonic() + timeout_s
    while any(procutil.looks_like_multirun(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def lines(
    previous: statefiles.SupervisorFile,
    layout: StateDir,
    starting: Collection[str],
    config: Path | str,
) -> list[str]:
    """What the dead supervisor left, as the new one's first lines."""
    head = (
        f"the previous supervisor (pid {previous.get('pid')}, started "
        f"{previous.get('started_utc', '?')}) ended without a stop, leaving no final report "
        "(killed: its workers then exit closing nothing, no on_stop applied; or its machine "
        "went down, or its disk was full)"
    )
    names = sorted({*(previous.get("accounts") or {}), *starting})
    # server: sim: that run's simulator died with it, and its trades with it
    adopted = "adopted by its worker now (its on_stop applies at the next stop)"
    if (previous.get("announced") or {}).get("sim"):
        adopted = "gone with that run's simulator (server: sim): its worker records them closed"
    out = []
    for name in names:
        journal = layout.account(name).journal
        held = held_trades(journal, name) if journal.exists() else ()
        if not held:
            continue
        what = f"{name}: {len(held)} trade(s) held: {'; '.join(held)}"
        if name in starting:
            out.append(f"{what}: {adopted}")
        else:
            out.append(
                f"{what}: not started by this run: `multirun close {config} {name}` closes them"
            )
    if not out:
        return [f"{head}; its journals hold nothing"]
    return [f"{head}; what its journals hold:", *out]
