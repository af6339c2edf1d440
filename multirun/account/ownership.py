"""One account, one trader: the host-wide account lock, foreign trades, orphan journals.

- :class:`AccountLock`: every process that trades a server account (a worker, a sweep,
  ``multirun close``) first takes a lock named after (server, user, runmode, accountid)
  in a per-user runtime directory (:func:`runtime_dir`): two configs with different
  ``state_dir`` on one account cannot both trade it. The loser raises
  :class:`AccountInUse` naming the holder (config, pid, account name), exit
  :data:`multirun.core.errors.EXIT_FATAL`: restarting it would only fail again.
- :class:`ForeignTrades`: across machines no lock helps; a worker that keeps adopting
  trades carrying its own prefix that it never journaled (another process trades the
  account under the same name) trips it and halts instead of fighting.
- :func:`orphan_journals` / :func:`orphan_lines`: journals in ``state_dir`` holding trades
  that no configured account owns (a renamed or removed account): ``start`` and
  ``validate`` name them, ``multirun close`` closes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from multirun.account.journal.store import Journal
from multirun.config.specs import RunnerSpec
from multirun.core.errors import FatalError, JournalError
from multirun.core.locks import HeldLock, read_holder
from multirun.core.statedir import StateDir

log = logging.getLogger("multirun.worker")

RUNTIME_ENV = "MULTIRUN_RUNTIME_DIR"  # overrides the runtime directory (tests, containers)
FOREIGN_LIMIT = 3  # adoptions of never-journaled trades of ours ...
FOREIGN_WINDOW_S = 600.0  # ... within this long: another process trades the account


class AccountInUse(FatalError):
    """Another process on this machine trades the same server account."""


def runtime_dir() -> Path:
    """The per-user directory of account locks (0700): ``$MULTIRUN_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/multirun``, else ``/tmp/multirun-<uid>``; created if missing."""
    chosen = os.environ.get(RUNTIME_ENV)
    if chosen:
        path = Path(chosen)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "multirun"
    else:
        path = Path("/tmp") / f"multirun-{os.getuid()}"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(path)
    except OSError as exc:
        raise JournalError(f"cannot create the lock directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise JournalError(f"lock directory {path} is not a directory of this user: refusing it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def account_key(server: str, user: str, runmode: str, accountid: str) -> str:
    """The lock's name for one server account: a hash (no user name in a file name)."""
    text = json.dumps([server.rstrip("/").lower(), user, runmode, accountid])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AccountLock:
    """An exclusive, host-wide lock on one server account, held until :meth:`close`
    (or the process dies: the kernel releases it). Its file names the holder."""

    def __init__(
        self, server: str, user: str, runmode: str, accountid: str, *, holder: dict[str, object]
    ) -> None:
        self.path = runtime_dir() / f"{account_key(server, user, runmode, accountid)}.lock"
        what = f"{user}/{runmode}/{accountid} on {server}"
        lock = HeldLock.try_acquire(self.path)
        if lock is None:
            raise AccountInUse(
                f"account {what} is already traded by {_holder(read_holder(self.path))}: one "
                "process per account (stop that one first)"
            )
        self._lock = lock
        record = {**holder, "pid": os.getpid(), "since": time.time()}
        try:
            lock.write(json.dumps(record, default=str))
        except BaseException:
            lock.release()
            raise

    def lost(self) -> str | None:
        """Why the lock no longer guards the account (its file deleted or replaced)."""
        reason = self._lock.lost()
        return None if reason is None else reason.replace("the lock", "the account lock", 1)

    def close(self) -> None:
        self._lock.release()


def lock_account(
    server: str, spec_user: str, runmode: str, accountid: str, *, config: Path, name: str
) -> AccountLock:
    """:class:`AccountLock` for account ``name`` of ``config`` (the holder's record)."""
    return AccountLock(
        server, spec_user, runmode, accountid, holder={"config": str(config), "account": name}
    )


def _holder(text: bytes) -> str:
    """Who holds an account lock, as its file names them."""
    with contextlib.suppress(ValueError):
        record = json.loads(text or b"{}")
        if isinstance(record, dict) and record.get("pid"):
            return (
                f"pid {record['pid']} (config {record.get('config', '?')}, "
                f"account {record.get('account', '?')})"
            )
    return "another process (starting: it has not named itself yet)"


class AccountLoss:
    """Why this process may no longer trade its account (:meth:`why`: None while it
    may). Told once, by the :class:`OwnershipGuard` or the :class:`ForeignTrades` count: from that
    moment ``refuse(reason)`` (the journal's) refuses every write, so no order can be
    sent; the worker reads :meth:`why` at each heartbeat and halts."""

    def __init__(self, refuse: Callable[[str], None]) -> None:
        self.refuse = refuse
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.refuse(reason)
            log.error("the account is no longer ours alone: %s", reason)

    def why(self) -> str | None:
        return self.reason


class OwnershipGuard:
    """The worker's heartbeat, plus (at most every ``every_s``) a check that its journal
    and account lock still follow their paths; on a loss, ``on_lost(reason)`` once."""

    def __init__(
        self,
        beat: Callable[[], None],
        checks: list[Callable[[], str | None]],
        on_lost: Callable[[str], None],
        *,
        every_s: float = 1.0,
    ) -> None:
        self.beat = beat
        self.checks = checks
        self.on_lost = on_lost
        self.every_s = every_s
        self._next = 0.0
        self.lost: str | None = None

    def __call__(self) -> None:
        self.beat()
        now = time.monotonic()
        if self.lost is not None or now < self._next:
            return
        self._next = now + self.every_s
        for check in self.checks:
            reason = check()
            if reason is not None:
                self.lost = reason
                self.on_lost(reason)
                return


class ForeignTrades:
    """Counts trades of ours that the journal never held, once the start-up
    reconciliation is over (adopting a lost journal's trades then is normal: the
    reconciler reports only later ones, see its ``on_foreign``; ``armed`` may hold it off
    longer). ``limit`` of them within ``window_s``: another process trades this account;
    ``on_trip`` once."""

    def __init__(
        self,
        on_trip: Callable[[str], None],
        armed: Callable[[], bool] = lambda: True,
        *,
        limit: int = FOREIGN_LIMIT,
        window_s: float = FOREIGN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_trip = on_trip
        self.armed = armed
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.seen: deque[tuple[float, str]] = deque()
        self.tripped = False

    def adopted(self, order_ref: str) -> None:
        if self.tripped or not self.armed():
            return
        now = self.clock()
        self.seen.append((now, order_ref))
        while self.seen and self.seen[0][0] < now - self.window_s:
            self.seen.popleft()
        if len(self.seen) >= self.limit:
            self.tripped = True
            refs = ", ".join(ref for _, ref in self.seen)
            self.on_trip(
                f"another process trades this account: {len(self.seen)} trades carrying our "
                f"orderRef prefix that this worker never sent, within {self.window_s:g} s "
                f"({refs})"
            )


# --- journals no configured account owns --------------------------------------------


@dataclass(frozen=True)
class Orphan:
    """A journal in ``state_dir`` of an account not in the config, and what it holds."""

    name: str
    path: Path
    trades: tuple[str, ...]  # each named as ``trade 7 BUY 1 BTCUSD (mr-alpha-1)``


def orphan_journals(runner: RunnerSpec) -> list[Orphan]:
    """Journals in ``runner.state_dir`` holding open trades (or unsettled orders) whose
    account is not in ``runner`` (renamed or removed), sorted by name. Reads only."""
    configured = {a.name for a in runner.accounts}
    found = []
    for name in StateDir(runner.state_dir).account_names():
        if name in configured:
            continue
        trades = held_trades(StateDir(runner.state_dir).account(name).journal, name)
        if trades:
            found.append(Orphan(name, StateDir(runner.state_dir).account(name).path, trades))
    return found


def held_trades(journal_path: Path, name: str) -> tuple[str, ...]:
    """What a journal holds (open trades, then unsettled orders), named; read-only use."""
    try:
        journal = Journal(journal_path, f"mr-{name}-")
    except JournalError as exc:
        return (f"(journal unreadable: {exc})",)
    try:
        held = [
            f"trade {r.trade_id} {r.side} {r.volume:g} {r.instrument} ({r.order_ref})"
            for r in journal.held()
        ]
        held += [
            f"order {r.side} {r.volume:g} {r.instrument} ({r.order_ref}): sent or not, unknown"
            for r in journal.intents()
        ]
        return tuple(held)
    except JournalError as exc:
        return (f"(journal unreadable: {exc})",)
    finally:
        journal.close()


def orphan_lines(runner: RunnerSpec, orphans: list[Orphan]) -> list[str]:
    """One line per orphan journal: what it holds and the command that closes it."""
    return [
        f"{o.path}: account {o.name!r} is not in {runner.path} but its journal holds "
        f"{len(o.trades)} open trade(s): {'; '.join(o.trades)}; close them with "
        f"`multirun close {runner.path} {o.name}` (see README: Renaming an account)"
        for o in orphans
    ]
