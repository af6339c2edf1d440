"""The final report of a stop: every trade an account's journal still holds, per account.

After every child is gone the arbiter reads each account's journal read-only
(:func:`journal_leftovers`) and says, per account, what is left open: the trade id, side,
volume, instrument and orderRef of each trade still held (OPEN or CLOSING), and each
intent whose fate is unknown (it may have reached the server). The exit status of a stop
and its last line (:func:`verdict`) come from what the journals hold then, after the
sweeps, not from how the workers went: 0 (``stopped; every account flat``) when nothing
of ours is held, however many workers had to be killed and swept; 1 when an account with
``on_stop: close`` still holds something, or a journal cannot be read (what is held is
unknown). What an account with ``on_stop: keep`` holds is listed as kept and changes
nothing.

The report is stored in ``supervisor.json`` (``left_open``, :func:`to_json`) for
``multirun status``; the final lines themselves (``final_lines``) for ``multirun stop``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from multirun.core import procutil
from multirun.core.errors import MultirunError
from multirun.core.statefiles import LeftOpenEntry

CLOSE, KEEP = "close", "keep"

# A journal's files (database, write-ahead log) as (inode, size, mtime_ns), None if absent
Signature = tuple[procutil.FileSignature | None, ...]


@dataclass(frozen=True)
class HeldTrade:
    """One trade (or unresolved intent) an account's journal still holds."""

    order_ref: str
    side: str
    volume: float
    instrument: str
    trade_id: str | None = None  # None: an intent that may or may not have reached the server
    state: str = "OPEN"


@dataclass(frozen=True)
class Leftover:
    """What one account left open at the end of a stop."""

    account: str
    on_stop: str  # close | keep
    trades: tuple[HeldTrade, ...] = ()
    error: str | None = None  # the journal could not be read: nothing can be said
    # the journal read and its files' signature just before (see unchanged())
    seen: tuple[Path, Signature] | None = field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        """Whether this makes the stop a failure: close promised and not kept, or what is
        held unknown (a journal that cannot be read, whatever ``on_stop``)."""
        return bool(self.error) or (self.on_stop == CLOSE and bool(self.trades))


def journal_leftovers(journal: Path, prefix: str, account: str, on_stop: str) -> Leftover:
    """What the journal at ``journal`` still holds, read without the account's lock.

    A journal that does not exist holds nothing (it is not created); one that cannot be
    read gives a Leftover with ``error`` set.
    """
    from multirun.account.journal.store import Journal

    if not journal.exists():
        return Leftover(account, on_stop)
    seen = (journal, signature(journal))  # before reading: a later write changes it
    try:
        book = Journal(journal, prefix, lock=None)
    except MultirunError as error:
        return Leftover(account, on_stop, error=str(error))
    try:
        orders = [*book.held(), *book.intents()]
    except Exception as error:  # sqlite3.Error: a damaged or locked file
        return Leftover(account, on_stop, error=f"cannot read journal {journal}: {error}")
    finally:
        book.close()
    trades = tuple(
        HeldTrade(o.order_ref, o.side, o.volume, o.instrument, o.trade_id, o.state) for o in orders
    )
    return Leftover(account, on_stop, trades, seen=seen)


def signature(journal: Path) -> Signature:
    """The journal's files as they are now: any commit changes the log's size or time,
    a checkpoint the database's, a close removes the log."""
    return tuple(procutil.signature(p) for p in (journal, journal.with_name(journal.name + "-wal")))


def unchanged(left: Leftover) -> bool:
    """Whether the journal ``left`` was read from is still as it was (no write since)."""
    return left.seen is not None and signature(left.seen[0]) == left.seen[1]


def describe(trade: HeldTrade) -> str:
    """``trade 123 BUY 1 BTCUSD (orderRef mr-a-7)``; an intent says it may be open."""
    volume = f"{trade.volume:g}"
    what = f"{trade.side} {volume} {trade.instrument} (orderRef {trade.order_ref})"
    if trade.trade_id is None:
        return f"order {what}: sent or not, unknown; it may be open"
    closing = ", close sent but not confirmed" if trade.state == "CLOSING" else ""
    return f"trade {trade.trade_id} {what}{closing}"


def summary(left: Leftover) -> str:
    """What one account's journal holds now, in one clause: ``nothing of ours held``,
    ``2 trade(s) still held (on_stop: keep): trade 1 ...; trade 2 ...``."""
    if left.error:
        return f"cannot tell what is held: {left.error}"
    if not left.trades:
        return "nothing of ours held"
    kept = " (on_stop: keep)" if left.on_stop == KEEP else ""
    held = "; ".join(describe(trade) for trade in left.trades)
    return f"{len(left.trades)} trade(s) still held{kept}: {held}"


def lines(leftovers: Mapping[str, Leftover] | list[Leftover]) -> list[str]:
    """The final lines: one per trade left open (or kept), per account."""
    items = list(leftovers.values()) if isinstance(leftovers, Mapping) else list(leftovers)
    out = []
    for left in items:
        if left.error:
            out.append(f"{left.account}: cannot tell what is left open: {left.error}")
        for trade in left.trades:
            if left.on_stop == KEEP:
                out.append(f"{left.account}: kept open (on_stop: keep): {describe(trade)}")
            else:
                out.append(f"{left.account}: LEFT OPEN: {describe(trade)}")
    return out


def verdict(
    leftovers: Mapping[str, Leftover] | list[Leftover], problems: Sequence[str] = ()
) -> tuple[int, str]:
    """The exit status and the last line of a stop, from what the journals hold once every
    child is gone (the sweeps done), and ``problems``: what else went wrong that no journal
    tells (an account FATAL, a service that died, a worker with no journal to read killed).

    0: nothing of ours is held but what ``on_stop: keep`` keeps, and no problem; else 1,
    the line naming each reason."""
    items = list(leftovers.values()) if isinstance(leftovers, Mapping) else list(leftovers)
    promised = [x for x in items if x.on_stop == CLOSE]
    trades = sum(1 for x in promised for t in x.trades if t.trade_id is not None)
    orders = sum(1 for x in promised for t in x.trades if t.trade_id is None)
    unread = [x.account for x in items if x.error]
    listed = []
    if trades:
        listed.append(f"{trades} trade(s) left open")
    if orders:
        listed.append(f"{orders} order(s) that may have opened a trade")
    if unread:
        listed.append(f"what {', '.join(unread)} hold(s) is unknown")
    reasons = [f"{', '.join(listed)} (listed above)"] if listed else []
    reasons += problems
    if reasons:
        return 1, f"stopped; exit status 1: {'; '.join(reasons)}"
    kept = sum(len(x.trades) for x in items if x.on_stop == KEEP)
    if kept:
        held = f"{kept} trade(s) kept (on_stop: keep; listed above)"
        return 0, f"stopped; nothing left open but {held}"
    return 0, "stopped; every account flat"


def swept(accounts: Mapping[str, str], *, most: int = 10) -> str | None:
    """The line naming the accounts a stop had to sweep (``accounts``: name -> how its
    worker went), None when none; at most ``most`` named (in name order: the same stop
    reads the same whichever worker went first), the rest counted."""
    if not accounts:
        return None
    named = [f"{name} ({accounts[name]})" for name in sorted(accounts)[:most]]
    more = len(accounts) - len(named)
    tail = f" and {more} more (see above)" if more else ""
    return f"{len(accounts)} account(s) needed a sweep: {', '.join(named)}{tail}"


def to_json(leftovers: Mapping[str, Leftover]) -> dict[str, LeftOpenEntry]:
    """``supervisor.json``'s ``left_open``: only the accounts that hold something."""
    return {
        name: {
            "on_stop": left.on_stop,
            "error": left.error,
            "trades": [asdict(t) for t in left.trades],
        }
        for name, left in leftovers.items()
        if left.trades or left.error
    }


def from_json(data: object) -> list[Leftover]:
    """The inverse of :func:`to_json` (tolerant: anything malformed is left out)."""
    if not isinstance(data, dict):
        return []
    out = []
    for name, entry in data.items():
        if not isinstance(entry, dict):
            continue
        trades = []
        for raw in entry.get("trades") or []:
            try:
                trades.append(HeldTrade(**raw))
            except TypeError:
                continue
        error = entry.get("error")
        on_stop = KEEP if entry.get("on_stop") == KEEP else CLOSE
        out.append(Leftover(str(name), on_stop, tuple(trades), str(error) if error else None))
    return out
