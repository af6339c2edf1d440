"""One account, one trader: the host-wide account lock, foreign trades, orphan journals.

- :class:`AccountLock`: every process that trades a server account (a worker, a sweep,
  ``multirun close``) first takes a lock named after (server, user, runmode, accountid)
  in a per-user runtime directory (:func:`runtime_dir`): two configs with different
  ``state_dir`` on one account cannot both trade it. The loser raises
  :class:`AccountInUse` naming the holder (config, pid, account name), exit
  :data:`multirun.core.errors.EXIT_FATAL`: restarting it would only fail again.
  The directory is one fixed place per host and user, whatever the environment
  (``/dev/shm/multirun-<uid>``: a systemd unit, even with ``PrivateTmp=``, an SSH shell and
  cron all see it), and the key is the normalised server (:func:`server_key`): the spellings
  ``localhost`` and ``127.0.0.1`` of one server are one account.
- :class:`ForeignTrades`: across machines no lock helps; a worker that sees a trade of its
  prefix under another journal's epoch (``<prefix><EPOCH>-<n>``) appear after its start
  halts at once; one that keeps adopting trades of its own epoch it never journaled trips
  it too. :class:`EpochWatch` reads the server's listings and history for that at start (the
  listings the start-up reconciliation read, handed over: not read twice) and every
  :data:`EPOCH_CHECK_S` (from the idle heartbeat: whatever the interval), so both traders
  of an account see each other's epoch and halt instead of fighting.
- :func:`orphan_journals` / :func:`orphan_lines`: journals in ``state_dir`` holding trades
  that no configured account owns (a renamed or removed account): ``start`` and
  ``validate`` name them, ``multirun close`` closes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from multirun.account.journal import order_refs
from multirun.account.journal.store import Journal
from multirun.account.reconcile import Listings
from multirun.api.models import Trade
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.errors import FatalError, JournalError, MultirunError
from multirun.core.locks import HeldLock, read_holder
from multirun.core.statedir import StateDir

log = logging.getLogger("multirun.worker")

RUNTIME_ENV = "MULTIRUN_RUNTIME_DIR"  # overrides the runtime directory (tests, containers)
# The lock directory's parent: a tmpfs every process of the host sees, systemd units with
# PrivateTmp= or PrivateDevices= too (unlike /tmp, or $XDG_RUNTIME_DIR that only a login
# session has). /tmp where it is missing (not Linux).
SHARED_DIR = Path("/dev/shm")
EPOCH_CHECK_ENV = "MULTIRUN_EPOCH_CHECK_S"  # overrides EPOCH_CHECK_S (tests)
EPOCH_CHECK_S = 60.0  # the server's listings and history read for foreign epochs this often
FOREIGN_LIMIT = 3  # adoptions of never-journaled trades of ours ...
FOREIGN_WINDOW_S = 600.0  # ... within this long: another process trades the account


class AccountInUse(FatalError):
    """Another process on this machine trades the same server account."""


def runtime_dir() -> Path:
    """The per-user directory of account locks (0700): ``$MULTIRUN_RUNTIME_DIR``, else
    ``/dev/shm/multirun-<uid>`` whatever the session (``$XDG_RUNTIME_DIR`` is set in a
    login shell, not in a service: two processes must not lock in two places), else
    ``/tmp/multirun-<uid>`` where there is no ``/dev/shm``; created if missing."""
    chosen = os.environ.get(RUNTIME_ENV)
    if chosen:
        path = Path(chosen)
    else:
        parent = SHARED_DIR if SHARED_DIR.is_dir() else Path("/tmp")
        path = parent / f"multirun-{os.getuid()}"
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
    """The lock's name for one server account: a hash (no user name in a file name) of
    the normalised server (:func:`server_key`), user, runmode and accountid."""
    text = json.dumps([server_key(server), user, runmode, accountid])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def lock_path(server: str, user: str, runmode: str, accountid: str) -> Path:
    """The file of one server account's :class:`AccountLock` (it names its holder)."""
    return runtime_dir() / f"{account_key(server, user, runmode, accountid)}.lock"


DEFAULT_PORTS = {"http": 80, "https": 443}
# compiled at import, in the supervisor before it forks: a worker compiling it when it
# takes its lock made 0.10-0.14 MiB of private pages per account (issue 27)
_SLASHES = re.compile("/+")


def server_key(url: str, resolve: Callable[[str], list[str]] | None = None) -> str:
    """One spelling per server: ``scheme://address:port/path``, the scheme and host
    lower-cased, the host resolved to its address (:func:`host_address`), the default
    port written out, repeated and trailing slashes dropped."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:  # not a number: compared as written
        port = 0
    host = host_address(parts.hostname or "", resolve or _addresses)
    path = _SLASHES.sub("/", parts.path).rstrip("/")
    return f"{scheme}://{host}:{port}{path}"


def host_address(host: str, resolve: Callable[[str], list[str]]) -> str:
    """``host`` as one address: ``loopback`` for any loopback one (``localhost``,
    ``127.0.0.1``, ``::1``), else the lowest IPv4 address it resolves to (then IPv6); the
    name itself when it does not resolve."""
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host)]
        except (OSError, ValueError):
            found = []
    if not found:
        return host.lower()
    if any(a.is_loopback for a in found):
        return "loopback"
    return str(min(found, key=lambda a: (a.version, a.packed)))


def _addresses(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


class AccountLock:
    """An exclusive, host-wide lock on one server account, held until :meth:`close`
    (or the process dies: the kernel releases it). Its file names the holder."""

    def __init__(
        self, server: str, user: str, runmode: str, accountid: str, *, holder: dict[str, object]
    ) -> None:
        self.path = lock_path(server, user, runmode, accountid)
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
    """Trades of ours that the journal never held, seen once the start-up
    reconciliation is over (adopting a lost journal's trades then is normal: the
    reconciler reports only later ones, see its ``on_foreign``; ``armed`` may hold it off
    longer). One under another epoch than ``epoch`` (another journal's: see
    :mod:`multirun.account.journal.order_refs`) trips it at once; ``limit`` of our own
    epoch (or none) within ``window_s`` too: another process trades this account.
    ``on_trip`` once."""

    def __init__(
        self,
        on_trip: Callable[[str], None],
        armed: Callable[[], bool] = lambda: True,
        *,
        prefix: str = "",
        epoch: str | None = None,
        limit: int = FOREIGN_LIMIT,
        window_s: float = FOREIGN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_trip = on_trip
        self.armed = armed
        self.prefix = prefix
        self.epoch = epoch
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.seen: deque[tuple[float, str]] = deque()
        self.tripped = False

    def other_epoch(self, order_ref: str) -> str | None:
        """The epoch of ``order_ref`` when it is ours but another journal's, else None."""
        found = order_refs.match(self.prefix, order_ref) if self.prefix else None
        epoch = found.group(1) if found else None
        return epoch if epoch and self.epoch and epoch != self.epoch else None

    def adopted(self, order_ref: str) -> None:
        if self.tripped or not self.armed():
            return
        other = self.other_epoch(order_ref)
        if other is not None:
            self.tripped = True
            self.on_trip(
                f"another process trades this account: trade {order_ref} carries our "
                f"orderRef prefix under epoch {other}, not this journal's {self.epoch}, and "
                "appeared after this worker started (it halts too when it sees ours)"
            )
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


def epoch_check_s() -> float:
    """How often :class:`EpochWatch` reads the server: :data:`EPOCH_CHECK_S`, or
    ``$MULTIRUN_EPOCH_CHECK_S`` (tests)."""
    with contextlib.suppress(ValueError):
        return max(0.1, float(os.environ.get(EPOCH_CHECK_ENV, EPOCH_CHECK_S)))
    return EPOCH_CHECK_S


class EpochWatch:
    """Reads the server's listings and the day's history for trades of our prefix under
    another journal's epoch, at start (what is there then: a previous journal's, or the
    other trader's, adopted by the start-up reconciliation) and at most every ``every_s``
    after, even without ticks (the worker runs it from its idle heartbeat). Each such
    orderRef first seen after start goes to ``foreign`` (:meth:`ForeignTrades.adopted`):
    the trade of another live trader, opened, or closed, after we started.

    At start the listings are those the start-up reconciliation read, when it hands them
    over (:meth:`listed_at_start`): reading them again moments later would see nothing
    more of another trader (a trade it filled in between is in the day's history read
    here; an order it left pending is reported at the next check, where a second read
    would have counted it as there at start) and would cost a starting fleet two
    requests per worker."""

    def __init__(
        self,
        client: Listings,
        foreign: ForeignTrades,
        *,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.foreign = foreign
        self.every_s = epoch_check_s() if every_s is None else every_s
        self.clock = clock
        self._next = 0.0
        self._read_at: float | None = None  # wall time of the last successful read
        self.known: set[str] | None = None  # other epochs' orderRefs seen at start
        # The orderRefs the start-up reconciliation listed (opened and pending), taken by
        # the first read instead of reading the listings again; None: read them
        self._start_listing: set[str] | None = None

    def listed_at_start(self, trades: Iterable[Trade]) -> None:
        """What the start-up reconciliation's last listing showed (opened and pending
        trades, whoever's): the first check's listings, before it has read any."""
        if self.known is None:
            self._start_listing = {t.order_ref for t in trades}

    def __call__(self) -> None:
        now = self.clock()
        if self.foreign.tripped or now < self._next:
            return
        self._next = now + self.every_s
        try:
            refs = self._other_epoch_refs()
        except MultirunError as exc:  # unreadable now: read again at the next check
            log.debug("ownership check: server unreadable (%s)", exc)
            return
        if self.known is None:
            self.known, self._start_listing = refs, None
            return
        for ref in sorted(refs - self.known):
            self.foreign.adopted(ref)
        self.known |= refs

    def _other_epoch_refs(self) -> set[str]:
        wall = time.time()
        days = {time.strftime("%Y-%m-%d", time.gmtime(wall))}
        if self._read_at is not None:  # the day of the last read too, past midnight
            days.add(time.strftime("%Y-%m-%d", time.gmtime(self._read_at - 5.0)))
        refs = self._listed()
        for day in sorted(days):
            refs |= {row.order_ref for row in self.client.strategy_trades(None, day)}
        self._read_at = wall
        return {ref for ref in refs if ref and self.foreign.other_epoch(ref)}

    def _listed(self) -> set[str]:
        """The orderRefs opened and pending: at the first check the start-up
        reconciliation's (when it handed them over), after it the server's now."""
        if self.known is None and self._start_listing is not None:
            return set(self._start_listing)
        refs = {t.order_ref for t in self.client.opened_trades()}
        return refs | {t.order_ref for t in self.client.pending_trades()}


# --- journals no configured account owns --------------------------------------------


def binding(runner: RunnerSpec, spec: AccountSpec) -> dict[str, str]:
    """The server account an account of ``runner`` trades, as its journal records it."""
    return {
        "server": runner.server, "user": spec.user, "runmode": spec.runmode,
        "accountid": spec.accountid,
    }  # fmt: skip


def same_binding(recorded: dict[str, str], wanted: dict[str, str]) -> bool:
    """Whether two recorded bindings name one server account (the server normalised)."""
    keys = ("user", "runmode", "accountid")
    return all(recorded.get(k) == wanted.get(k) for k in keys) and server_key(
        recorded.get("server", "")
    ) == server_key(wanted.get("server", ""))


@dataclass(frozen=True)
class Orphan:
    """A journal in ``state_dir`` of an account not in the config (or bound to another
    server account than the config's), and what it holds."""

    name: str
    path: Path
    trades: tuple[str, ...]  # each named as ``trade 7 BUY 1 BTCUSD (mr-alpha-1)``
    rebound: str | None = None  # configured, but its trades were opened on this account


def orphan_journals(runner: RunnerSpec) -> list[Orphan]:
    """Journals in ``runner.state_dir`` holding open trades (or unsettled orders) whose
    account is not in ``runner`` (renamed or removed), or is but now bound to another
    server account (its accountid edited), sorted by name. Reads only."""
    configured = {a.name: a for a in runner.accounts}
    found = []
    for name in StateDir(runner.state_dir).account_names():
        account = StateDir(runner.state_dir).account(name)
        rebound = None
        if name in configured:
            rebound = _other_binding(account.journal, binding(runner, configured[name]))
            if rebound is None:
                continue
        trades = held_trades(account.journal, name)
        if trades:
            found.append(Orphan(name, account.path, trades, rebound))
    return found


def _other_binding(journal_path: Path, wanted: dict[str, str]) -> str | None:
    """``user/runmode/accountid`` a journal records when not ``wanted``, else None."""
    if not journal_path.exists():
        return None
    try:
        journal = Journal(journal_path, "")
    except JournalError:
        return None
    try:
        recorded = journal.identity()
    except JournalError:
        return None
    finally:
        journal.close()
    if recorded is None or same_binding(recorded, wanted):
        return None
    return f"{recorded.get('user')}/{recorded.get('runmode')}/{recorded.get('accountid')}"


def journal_holds(state_dir: Path) -> Callable[[str], tuple[str, ...]]:
    """``name`` -> what account ``name``'s journal in ``state_dir`` holds (:func:`held_trades`;
    nothing without a journal)."""

    def holds(name: str) -> tuple[str, ...]:
        path = StateDir(state_dir).account(name).journal
        return held_trades(path, name) if path.exists() else ()

    return holds


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
        f"{o.path}: account {o.name!r} {_whose(runner, o)} but its journal holds "
        f"{len(o.trades)} open trade(s): {'; '.join(o.trades)}; close them with "
        f"`multirun close {runner.path} {o.name}` (see docs/operating.md: Closing an "
        "account's trades)"
        for o in orphans
    ]


def _whose(runner: RunnerSpec, orphan: Orphan) -> str:
    if orphan.rebound is None:
        return f"is not in {runner.path}"
    return f"of {runner.path} trades another server account now than {orphan.rebound}"
