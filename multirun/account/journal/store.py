"""The per-account order journal: a SQLite database that survives any crash.

One file per account (:attr:`multirun.core.statedir.AccountDir.journal`; 0600, directory
0700), WAL mode. Every write that protects an order is committed with
``synchronous=FULL``, so it is on disk before we act on it; the writes a tick defers
(:meth:`Journal.batch`) are committed without waiting for the disk. The worker running
the account holds :attr:`~multirun.core.statedir.AccountDir.lock`.

An order goes through these states::

    INTENT --ack--> OPEN --close requested--> CLOSING --confirmed--> CLOSED
       |                                                      (also: gone from the server)
       +--not on the server after the reconcile window--> ABANDONED

The intent (orderRef, side, volume, instrument) is committed *before* the order is
sent, so after a crash at any instant the worker knows every orderRef it may have
sent and asks the server about it instead of sending it again. Trades the server
lists with our prefix but the journal does not know are ADOPTED as OPEN.

orderRefs are ``<prefix><EPOCH>-<n>`` (:mod:`~multirun.account.journal.order_refs`): a deleted
or reset journal draws a new epoch, so its orderRefs never repeat one the server already knows. A
journal created now, not found on disk, is :attr:`Journal.is_new`.

The worker, a sweep and ``multirun close`` (holding the lock) check the file whole at open
(``PRAGMA quick_check``, a few ms): a damaged journal is set aside, renamed and kept, and a
new one rebuilt from the server's listings (:mod:`~multirun.account.journal.set_aside`).

The lock file and the journal must stay the files their paths name: :meth:`Journal.lost`
says when one was deleted or replaced (a state directory removed while running).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from multirun.account.journal import order_refs, set_aside
from multirun.account.journal.schema import CorruptJournal, JournalOrder, connect
from multirun.account.journal.set_aside import Rebuilt
from multirun.core.clock import SYSTEM_CLOCK, Clock
from multirun.core.errors import JournalError
from multirun.core.locks import HeldLock
from multirun.core.statedir import AccountDir

INTENT, OPEN, CLOSING, CLOSED, ABANDONED = "INTENT", "OPEN", "CLOSING", "CLOSED", "ABANDONED"
HELD = (OPEN, CLOSING)  # states in which the trade may still be open on the server
PAUSE_KEY = "pause"  # meta: the account's pause, if any (no new opens; see Journal.pause)
RESUMED_KEY = "resumed"  # meta: the day's loss the last resume counts from (Journal.resumed)
SETTLED = (CLOSED, ABANDONED)  # an order in these is done: written again rarely, if ever
# The settled rows the mirror keeps (those written or read last): a close is priced just
# after it is confirmed, and the day's P&L sum moves by the row it had. Keeping every
# settled row grew a worker by ~0.8 KB a tick (14 MB a day at 5 s); an older one is read
# from the file again.
SETTLED_KEPT = 64


class Journal:
    """One account's journal. Not thread-safe: the worker uses it from one thread.

    ``lock``: the lock file to hold while open (one worker per account); None opens
    the journal without it, for readers that do not run the account.
    """

    def __init__(
        self,
        path: Path,
        prefix: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lock: Path | None = None,
        identity: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.prefix = prefix
        self._clock = clock
        self._lock: HeldLock | None = None
        # Inside batch(): writes that protect no order (prices, equity, listed times, the
        # strategy's state) wait in an open transaction for the next commit.
        self._batching = False
        self._open_tx = False  # a transaction holding deferred writes is open
        self._synchronous = "FULL"  # the connection's level (schema.connect sets FULL)
        # The mirror (issue 27), kept while we hold the lock (this process is then the
        # journal's only writer): query results by states, and rows by orderRef. Every
        # write of an orders row names its orderRefs, which are read again inside the
        # write's transaction and patched into both; any other write, a rollback or a
        # failed commit drops them (read again from the file). Reads cost no SELECT.
        self._cache: dict[tuple[str, ...], list[JournalOrder]] = {}
        self._rows_by_ref: dict[str, JournalOrder | None] = {}
        self._settled: dict[str, None] = {}  # its settled (or unknown) refs, oldest first
        # (since_ts, the creation times of our orders since then, sorted): sent_since's
        self._sent: tuple[float, list[float]] | None = None
        # (since_ts, realized_since(since_ts)) kept up to date by the mirror: read every
        # tick, it would otherwise sum a day of closes each time
        self._realized: tuple[float, float] | None = None
        existed = path.exists() and path.stat().st_size > 0
        if lock is not None:  # before opening: only the lock's holder sets a journal aside
            self._lock = _lock(lock)
        try:
            self._db, rebuilt = _open(path, locked=lock is not None)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        try:
            self._file_id = _file_id(os.stat(path))
            self.epoch, created = self._epoch(identity)
            if identity is not None and not created:
                self.record_identity(identity)
            if rebuilt is not None:
                self._record_rebuilt(rebuilt)
            # When and why this journal replaced a damaged one (None: it never did).
            self.rebuilt: Rebuilt | None = rebuilt or self._recorded_rebuilt()
        except BaseException:
            self.close()
            raise
        # No journal on disk before this open: a first start, or a reset, deleted or
        # damaged (set aside) one.
        self.is_new = created and (not existed or rebuilt is not None)
        self.refusal: str | None = None  # set by refuse(): no new orders, and why

    @classmethod
    def for_account(
        cls,
        account: AccountDir,
        prefix: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        identity: dict[str, str] | None = None,
    ) -> Journal:
        """The journal of the account in ``account``, locked for the worker running it;
        ``identity``: :meth:`record_identity` (with a new journal's epoch: one commit)."""
        return cls(account.journal, prefix, clock=clock, lock=account.lock, identity=identity)

    def close(self) -> None:
        with contextlib.suppress(JournalError):
            self.commit()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock is not None:
            self._lock.release()

    # --- orders -----------------------------------------------------------------

    def lost(self) -> str | None:
        """Why this journal no longer holds its account (None while it does): its file
        or its lock file was deleted or replaced, so another process may open new ones.
        Two ``stat`` calls: cheap enough to ask every second."""
        try:
            now = _file_id(os.stat(self.path))
        except OSError:
            return _deleted(self.path)
        if now != self._file_id:
            return _replaced(self.path)
        if self._lock is not None and self._lock.lost() is not None:
            path = self._lock.path  # the lock says it no longer guards; say how, as above
            return _replaced(path) if path.exists() else _deleted(path)
        return None

    def refuse(self, reason: str) -> None:
        """No new order from now on: :meth:`new_intent` raises a JournalError naming ``reason``."""
        self.refusal = reason

    def new_intent(self, instrument: str, side: str, volume: float) -> JournalOrder:
        """Commit the intent of an order (with a fresh orderRef) before it is sent."""
        if self.refusal is not None:
            raise JournalError(f"no new orders: {self.refusal}")
        created = self._now()
        with self._tx(refs=()) as db:
            seq = order_refs.next_seq(db)
            ref = f"{self.prefix}{self.epoch}-{seq}"
            db.execute(
                "INSERT INTO orders (order_ref, instrument, side, volume, state, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (ref, instrument, side, volume, INTENT, created),
            )
            self._rows_by_ref.setdefault(ref, None)  # inserted: no row before it
            self._mirror([ref])
        if self._sent is not None:  # committed: the only row of origin 'sent' we make
            bisect.insort(self._sent[1], created)
        return self.get(ref)

    def mark_send_ended(self, order_ref: str, at: float | None = None) -> None:
        """No copy of this intent can reach the server after ``at`` (default: now):
        the client gave up on it, or the process sending it died."""
        self._update(order_ref, "send_ended_ts = ?", self._now() if at is None else at)

    def mark_acked(self, order_ref: str, trade_id: str) -> None:
        """The server took the order as ``trade_id``.

        Deferred in a batch (committed with the next order write, at the latest at the
        tick's end, before anything else is sent): it protects no order of its own. Lost
        in a crash, the row is the intent it was, and the restart finds the trade by its
        orderRef, as after a crash while the open was being sent."""
        now = self._now()
        self._update(
            order_ref,
            "state = ?, trade_id = ?, acked_ts = COALESCE(acked_ts, ?),"
            " send_ended_ts = COALESCE(send_ended_ts, ?)",
            OPEN,
            str(trade_id),
            now,
            now,
            deferred=True,
        )

    def mark_listed(self, order_refs: Iterable[str]) -> None:
        """The server listed these trades: from now on, unlisted means closed.

        Deferred in a batch: lost in a crash, the row only looks just acknowledged
        for the rest of its reconcile window (the restart waits instead of concluding)."""
        refs = list(order_refs)
        if not refs:
            return  # no transaction at all (sync calls it every tick)
        now = self._now()
        with self._deferred(refs) as db:
            for ref in refs:
                db.execute(
                    "UPDATE orders SET listed_ts = ? WHERE order_ref = ? AND listed_ts IS NULL",
                    (now, ref),
                )

    def mark_abandoned(self, order_ref: str, note: str) -> None:
        self._update(order_ref, "state = ?, note = ?", ABANDONED, note)

    def adopt(
        self, order_ref: str, trade_id: str, instrument: str, side: str, volume: float
    ) -> JournalOrder:
        """Record a trade of ours the journal did not know (or thought gone) as OPEN."""
        now = self._now()
        with self._tx(refs=[order_ref]) as db:
            db.execute(
                "INSERT INTO orders (order_ref, instrument, side, volume, origin, state,"
                " trade_id, created_ts, acked_ts, listed_ts, note)"
                " VALUES (?, ?, ?, ?, 'adopted', ?, ?, ?, ?, ?, 'adopted from the server')"
                " ON CONFLICT (order_ref) DO UPDATE SET state = excluded.state,"
                " trade_id = excluded.trade_id, acked_ts = COALESCE(acked_ts, excluded.acked_ts),"
                " listed_ts = COALESCE(listed_ts, excluded.listed_ts),"
                " closed_ts = NULL, note = 'seen open on the server again'",
                (order_ref, instrument, side, volume, OPEN, str(trade_id), now, now, now),
            )
            order_refs.bump_seq(db, self.seq_of(order_ref))
        return self.get(order_ref)

    def mark_close_requested(self, order_refs: Iterable[str]) -> None:
        now = self._now()
        refs = list(order_refs)
        with self._tx(refs=refs) as db:
            for ref in refs:
                db.execute(
                    "UPDATE orders SET state = ?, close_requested_ts = ? WHERE order_ref = ?",
                    (CLOSING, now, ref),
                )

    def mark_closed(self, order_refs: Iterable[str], note: str = "close confirmed") -> None:
        """The closes of ``order_refs`` are confirmed.

        Deferred in a batch, as :meth:`mark_acked`: lost in a crash, the rows are CLOSING
        again, and the restart asks the server, which says closed (a trade is declared
        closed only on the server's word either way)."""
        now = self._now()
        refs = list(order_refs)
        with self._deferred(refs) as db:
            for ref in refs:
                db.execute(
                    "UPDATE orders SET state = ?, closed_ts = ?, note = ? WHERE order_ref = ?",
                    (CLOSED, now, note, ref),
                )

    def record_fill(
        self, order_ref: str, price: float | None, at: float | None, source: str
    ) -> None:
        """The trade's open price and time (``source``: see :mod:`multirun.account.journal.schema`);
        ``at`` None keeps the time already known (listed, else acknowledged)."""
        self._update(
            order_ref,
            "fill_price = ?, filled_ts = COALESCE(?, filled_ts, listed_ts, acked_ts),"
            " price_source = ?",
            price,
            at,
            source,
            deferred=True,  # lost in a crash: priced again from the listing at restart
        )

    def record_close(
        self, order_ref: str, price: float | None, realized_pl: float | None, source: str
    ) -> None:
        """The trade's close price and realized P&L, as ``source`` gives them."""
        self._update(
            order_ref,
            "close_price = ?, realized_pl = ?, price_source = ?",
            price,
            realized_pl,
            source,
            deferred=True,  # a figure only: lost in a crash, the close stays unpriced
        )

    def add_equity(
        self, ts: float, nav: float | None, realized: float | None, unrealized: float | None
    ) -> None:
        """One point of the server's equity series (deferred in a batch)."""
        with self._deferred(()) as db:  # no orders row
            db.execute(
                "INSERT INTO equity (ts, nav, realized_pl, unrealized_pl) VALUES (?, ?, ?, ?)",
                (ts, nav, realized, unrealized),
            )

    def realized_since(self, since_ts: float) -> float:
        """The realized P&L of trades of ours closed since ``since_ts`` (priced ones).
        The lock's holder reads the sum once per ``since_ts``; its mirror then adds what
        each write changes (see :meth:`_mirror`)."""
        if self._realized is not None and self._realized[0] == since_ts:
            return self._realized[1]
        (row,) = self._rows(
            "SELECT COALESCE(SUM(realized_pl), 0) FROM orders WHERE closed_ts >= ?", (since_ts,)
        )
        if self._lock is not None:  # the only writer: the mirror keeps it
            self._realized = (since_ts, float(row[0]))
        return float(row[0])

    def bump_seq(self, seen_suffix: int | None) -> None:
        """Make sure the next orderRef's number is above ``seen_suffix``."""
        if seen_suffix is not None:
            with self._tx() as db:
                order_refs.bump_seq(db, seen_suffix)

    # --- queries ----------------------------------------------------------------

    def get(self, order_ref: str) -> JournalOrder:
        if order_ref in self._rows_by_ref:
            row = self._rows_by_ref[order_ref]
        else:
            row = self._read_row(order_ref)
            if self._lock is not None:
                self._keep(order_ref, row)
        if row is None:
            raise KeyError(order_ref)
        return row

    def _read_row(self, order_ref: str) -> JournalOrder | None:
        rows = self._rows("SELECT * FROM orders WHERE order_ref = ?", (order_ref,))
        return JournalOrder(**dict(rows[0])) if rows else None

    def find(self, order_ref: str) -> JournalOrder | None:
        try:
            return self.get(order_ref)
        except KeyError:
            return None

    def in_states(self, *states: str) -> list[JournalOrder]:
        cached = self._cache.get(states)
        if cached is not None:
            return list(cached)
        marks = ",".join("?" * len(states))
        rows = self._rows(f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY id", states)
        orders = [JournalOrder(**dict(row)) for row in rows]
        if self._lock is not None:  # the only writer: the mirror keeps it
            self._cache[states] = orders
        return list(orders)

    def held(self) -> list[JournalOrder]:
        """Orders that may be open on the server (OPEN or CLOSING)."""
        return self.in_states(*HELD)

    def intents(self) -> list[JournalOrder]:
        """Orders that may or may not have reached the server."""
        return self.in_states(INTENT)

    def sent_since(self, since_ts: float) -> int:
        """How many orders we created (sent or about to) since ``since_ts``. The lock's
        holder reads their times once, then keeps them (:meth:`new_intent` adds each),
        those before ``since_ts`` let go: counting an hour of orders in the file before
        every order (max_orders_per_hour) cost 0.2 ms at one order a second."""
        kept = self._sent
        if kept is not None and since_ts >= kept[0]:
            times = kept[1]
            del times[: bisect.bisect_left(times, since_ts)]
            self._sent = (since_ts, times)
            return len(times)
        rows = self._rows(
            "SELECT created_ts FROM orders WHERE origin = 'sent' AND created_ts >= ?"
            " ORDER BY created_ts",
            (since_ts,),
        )
        times = [float(row[0]) for row in rows]
        if self._lock is not None:  # the only writer: the mirror keeps them
            self._sent = (since_ts, times)
        return len(times)

    def all_orders(self) -> list[JournalOrder]:
        rows = self._rows("SELECT * FROM orders ORDER BY id")
        return [JournalOrder(**dict(row)) for row in rows]

    def seq_of(self, order_ref: str) -> int | None:
        """The counter in one of our orderRefs; None if ``order_ref`` is not ours."""
        match = self._match(order_ref)
        return int(match.group(2)) if match else None

    def owns(self, order_ref: str) -> bool:
        """Whether ``order_ref`` is one of this account's: the prefix, then an optional
        upper-case epoch and ``-``, then only digits (any epoch: a reset journal's too).

        The prefix alone is not enough: account ``coin``'s ``mr-coin-`` is also the
        start of every orderRef of an account named ``coin-btc``.
        """
        return self._match(order_ref) is not None

    def _match(self, order_ref: str) -> re.Match[str] | None:
        return order_refs.match(self.prefix, order_ref)

    # --- which server account this journal trades -----------------------------------

    def identity(self) -> dict[str, str] | None:
        """The server account last recorded by :meth:`record_identity` (None: never)."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'account'")
        if not rows:
            return None
        value = json.loads(rows[0][0])
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None

    def record_identity(self, identity: dict[str, str]) -> None:
        """Record which server account (server, user, runmode, accountid) this journal
        trades, so that ``multirun close`` can find its credentials after a rename."""
        text = json.dumps(identity, sort_keys=True)
        if self.identity() != identity:
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('account', ?)", (text,)
                )

    # --- a pause (issue 24: an operator's, a money limit's) ------------------------------

    def pause(self) -> str | None:
        """The pause recorded by :meth:`record_pause` (its JSON text), None when not paused."""
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (PAUSE_KEY,))
        return str(rows[0][0]) if rows else None

    def record_pause(self, text: str | None, *, resumed: str | None = None) -> None:
        """Record a pause (``text``: :class:`multirun.account.risk.Pause` as JSON), or clear
        it (None) and record what the resume counts from (``resumed``: JSON of
        :meth:`multirun.account.risk.MoneyWatch.resumed`); durably, before returning: a
        restarted worker starts paused, or counts its day's loss as the resume did."""
        with self._tx() as db:
            if text is None:
                db.execute("DELETE FROM meta WHERE key = ?", (PAUSE_KEY,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (PAUSE_KEY, text)
                )
            if resumed is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (RESUMED_KEY, resumed),
                )

    def resumed(self) -> str | None:
        """What the last resume counts the day's loss from (JSON), None: never resumed."""
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (RESUMED_KEY,))
        return str(rows[0][0]) if rows else None

    def _recorded_rebuilt(self) -> Rebuilt | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (set_aside.META_KEY,))
        return Rebuilt.from_json(str(rows[0][0])) if rows else None

    def _record_rebuilt(self, rebuilt: Rebuilt) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (set_aside.META_KEY, rebuilt.to_json()),
            )

    # --- strategy state -----------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        rows = self._rows("SELECT json FROM strategy_state WHERE id = 1")
        if not rows or not rows[0][0]:
            return {}
        value = json.loads(rows[0][0])
        return value if isinstance(value, dict) else {}

    def save_state(self, state: dict[str, Any]) -> None:
        """Persist the strategy's state dict (must be JSON-serialisable)."""
        try:
            text = json.dumps(state, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"strategy state is not JSON-serialisable: {exc}") from None
        # Deferred in a batch: lost in a crash, the strategy sees its previous state.
        with self._deferred(()) as db:  # no orders row
            db.execute("INSERT OR REPLACE INTO strategy_state (id, json) VALUES (1, ?)", (text,))

    # --- internals ----------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.time()

    def _epoch(self, identity: dict[str, str] | None = None) -> tuple[str, bool]:
        """This journal's epoch, drawn (and committed) on first use; and whether it was.
        A new journal's ``identity`` goes in the same commit (one forced write, not two)."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'epoch'")
        if rows:
            return str(rows[0][0]), False
        epoch = order_refs.draw_epoch()
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
            if identity is not None:
                text = json.dumps(identity, sort_keys=True)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('account', ?)", (text,)
                )
        (row,) = self._rows("SELECT value FROM meta WHERE key = 'epoch'")
        return str(row[0]), str(row[0]) == epoch

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Within the block, writes that protect no order (:meth:`mark_acked`,
        :meth:`mark_listed`, :meth:`mark_closed`, :meth:`record_fill`,
        :meth:`record_close`, :meth:`add_equity`, :meth:`save_state`) are committed
        with the next write that does (an intent, a close request...) or at the end of
        the block: one transaction instead of one each. Reads see them. Committed even
        when the block raises (a failed commit is then ignored: the block's error comes
        first); else it raises JournalError."""
        outer, self._batching = self._batching, True
        try:
            yield
        except BaseException:
            self._batching = outer
            if not outer:
                with contextlib.suppress(JournalError):
                    self.commit()
            raise
        self._batching = outer
        if not outer:
            self.commit()

    def commit(self) -> None:
        """Commit (durably) the writes deferred so far, if any."""
        if self._open_tx:
            self._open_tx = False
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._forget()  # rolled back: the file no longer has what the mirror has
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise JournalError(f"journal {self.path}: cannot commit: {exc}") from None

    def _deferred(
        self, refs: Sequence[str] | None = None
    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write that protects no order: in a batch, left in the open transaction for
        the next commit; outside one, a transaction of its own. ``refs`` as :meth:`_tx`."""
        return self._tx(commit=not self._batching, refs=refs)

    @contextlib.contextmanager
    def _tx(
        self, *, commit: bool = True, refs: Sequence[str] | None = None
    ) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction, rolled back on error. ``commit``: committed
        durably (synchronous=FULL: on disk before the caller acts) on exit; else left
        open for the writes deferred in a batch, committed later without waiting for
        the disk (synchronous=NORMAL: a process killed keeps them, as the OS has them; a
        power cut may lose them, as a crash may lose deferred writes). Deferred writes
        still open when a durable one begins are committed first, on their own (the
        durable commit then syncs them too: the log is synced whole). ``refs``: the
        orderRefs of every orders row the block writes (their rows are read again into
        the mirror before the commit); None (unknown) drops the mirror."""
        if refs is None:
            self._forget()
        if commit and self._open_tx:
            self.commit()
        if not self._open_tx:
            self._begin("FULL" if commit else "NORMAL")
        try:
            yield self._db
            self._mirror(refs or ())
        except BaseException as exc:
            self._open_tx = False
            self._forget()  # rolled back, deferred writes before it too
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"journal {self.path}: {exc}") from None
            raise
        if commit:
            self.commit()

    def _begin(self, synchronous: str) -> None:
        """BEGIN IMMEDIATE at ``synchronous`` (a level SQLite lets change only between
        transactions)."""
        try:
            if synchronous != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={synchronous}")
                self._synchronous = synchronous
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._forget()  # a failing disk: the reads that follow find it too
            raise JournalError(f"journal {self.path}: {exc}") from None
        self._open_tx = True

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read's rows; a failing database (disk full, I/O error) is a JournalError."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from None

    def _update(
        self, order_ref: str, assignments: str, *values: Any, deferred: bool = False
    ) -> None:
        refs = [order_ref]
        with self._deferred(refs) if deferred else self._tx(refs=refs) as db:
            db.execute(f"UPDATE orders SET {assignments} WHERE order_ref = ?", (*values, order_ref))

    def _mirror(self, refs: Iterable[str]) -> None:
        """Read ``refs``' rows again (inside the writing transaction: what the commit
        will make durable) and patch them into the mirror."""
        if self._lock is None:
            self._forget()  # not the only writer: nothing is kept
            return
        for ref in refs:
            row = self._read_row(ref)
            self._count_realized(ref, row)
            self._keep(ref, row)
            for states, orders in self._cache.items():
                kept = [o for o in orders if o.order_ref != ref]
                if row is not None and row.state in states:
                    kept = sorted([*kept, row], key=lambda o: o.id)
                self._cache[states] = kept

    def _keep(self, ref: str, row: JournalOrder | None) -> None:
        """``ref``'s row into the mirror: every unsettled one (a few: what is open or in
        flight), and the :data:`SETTLED_KEPT` settled or unknown ones used last."""
        self._rows_by_ref[ref] = row
        self._settled.pop(ref, None)
        if row is not None and row.state not in SETTLED:
            return
        self._settled[ref] = None
        while len(self._settled) > SETTLED_KEPT:
            oldest = next(iter(self._settled))
            del self._settled[oldest]
            del self._rows_by_ref[oldest]

    def _count_realized(self, ref: str, row: JournalOrder | None) -> None:
        """Move the kept :meth:`realized_since` sum by what the write of ``ref`` changed
        (the mirror's row before it, ``row`` after; a row the mirror did not hold drops
        the sum: it is read again next time)."""
        if self._realized is None:
            return
        if ref not in self._rows_by_ref:
            self._realized = None
            return
        was = self._rows_by_ref[ref]
        since, total = self._realized
        self._realized = (since, total + _realized_after(row, since) - _realized_after(was, since))

    def _forget(self) -> None:
        """Drop the mirror: the next reads go to the file."""
        self._cache.clear()
        self._rows_by_ref.clear()
        self._settled.clear()
        self._sent = None
        self._realized = None


def _realized_after(row: JournalOrder | None, since_ts: float) -> float:
    """What ``row`` adds to :meth:`Journal.realized_since` (its SQL, row by row)."""
    if row is None or row.closed_ts is None or row.realized_pl is None:
        return 0.0
    return row.realized_pl if row.closed_ts >= since_ts else 0.0


def _open(path: Path, *, locked: bool) -> tuple[sqlite3.Connection, Rebuilt | None]:
    """The journal's connection. Its lock's holder checks it whole first (quick_check)
    and sets a damaged one aside for a new one (:mod:`~multirun.account.journal.set_aside`);
    a reader only opens it (a damaged one raises CorruptJournal)."""
    if not locked:
        return connect(path), None
    try:
        return connect(path, check=True), None
    except CorruptJournal as exc:
        damage = str(exc).rpartition(": ")[2]
        try:
            rebuilt = set_aside.set_aside(path, damage)
        except OSError as error:
            raise JournalError(
                f"journal {path} is damaged ({damage}) and cannot be set aside: "
                f"{error.strerror or error}"
            ) from None
        return connect(path), rebuilt


def _lock(path: Path) -> HeldLock:
    """Hold an exclusive lock on ``path``: one worker per account, ever.

    The kernel releases it when the process dies, however it dies.
    """
    try:  # taken before the journal is opened (created): its directory may be new
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise JournalError(f"cannot open journal {path.parent}: {exc.strerror or exc}") from None
    lock = HeldLock.try_acquire(path)
    if lock is None:
        raise JournalError(f"journal {path.parent} is in use: another worker runs this account")
    return lock


def _deleted(path: Path) -> str:
    return f"{path} was deleted while this process held it"


def _replaced(path: Path) -> str:
    return f"{path} was replaced by another file while this process held it"


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
