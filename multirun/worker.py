"""One account's worker: tick, ask the strategy, move our trades to its target.

:func:`run_account` is the entry point (``multirun run-account`` and the
supervisor's forked children). A :class:`Worker` owns one account's client,
journal, strategy and ticker:

1. On start it locks and reconciles the journal with the server (adopts trades
   carrying our orderRef prefix, records trades closed meanwhile, settles intents
   that may have been sent by asking the server with ``find_order``; an intent is
   never sent again).
2. On each tick it syncs with the server's trade listings, calls the strategy, and
   executes the decision: close what is on the wrong side, open one trade of
   ``volume`` when not already there. Every order's intent is journaled before
   it is sent. Only trades whose orderRef is the account's prefix followed by
   digits are ever touched (see :meth:`Journal.owns`).
3. Guardrails: no opening beyond ``max_open_trades`` or ``max_orders_per_hour``;
   after ``halt_after_failures`` consecutive failed ticks the worker is HALTED (no
   more orders; still writing its status) until stopped.
4. SIGTERM/SIGINT: finish the current tick, then ``on_stop`` (close our trades and
   confirm, or keep them journaled), exit 0. SIGHUP (the supervisor died): unwind
   at once, close nothing, exit within 2 s.

``status.json`` beside the journal is rewritten atomically after every tick and
state change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from multirun import procutil, strategies
from multirun.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    ApiError,
    CloseUnconfirmed,
    MultirunError,
    OrderUncertain,
    UsageError,
    exit_code_for,
)
from multirun.journal import HELD, Journal, JournalOrder
from multirun.models import Bar, OrderAck, Quote, Trade
from multirun.specs import AccountSpec, RunnerSpec
from multirun.strategies import Signal
from multirun.strategies.context import Decision, OpenTrade, StrategyContext
from multirun.ticker import SYSTEM_CLOCK, Clock, StopFlag, Tick, Ticker, utc

log = logging.getLogger("multirun.worker")

RUNNING, HALTED, STOPPED = "RUNNING", "HALTED", "STOPPED"
ORPHANED = "orphaned"
ORPHAN_EXIT_S = 1.8  # SIGHUP: hard exit after this long if unwinding is stuck (limit: 2 s)
# How long a previous process may have kept (re)sending one order: the client's sends
# with their read timeouts and reconciliation. Bounds the wait for an unsettled intent.
MAX_SEND_S = 120.0


class Client(Protocol):
    """What the worker uses of :class:`multirun.client.AlgogeneClient`."""

    token_expires_utc: Any

    def opened_trades(self, trade_id: str | int | None = None) -> list[Trade]: ...
    def pending_trades(self) -> list[Trade]: ...
    def find_order(self, order_ref: str) -> Trade | None: ...
    def realtime_price(self, symbols: str) -> dict[str, Quote]: ...
    def history_price(self, instrument: str, interval: str, count: int) -> list[Bar]: ...
    def open_order(
        self, instrument: str, buysell: str, volume: float, order_ref: str
    ) -> OrderAck: ...
    def close_trades(self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...) -> None: ...
    def cancel_orders(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...
    ) -> None: ...
    def close(self) -> None: ...


class Orphaned(BaseException):  # a control-flow signal, like KeyboardInterrupt
    """SIGHUP: the supervisor is gone. Unwinds the current tick; nothing is closed."""


class StoppedReconciling(BaseException):  # a control-flow signal, like KeyboardInterrupt
    """SIGTERM/SIGINT during start-up reconciliation, which only reads: unwind it now."""


@dataclass(frozen=True)
class Timing:
    """The client's timing the worker must agree with (see AlgogeneClient)."""

    reconcile_window_s: float = 5.0  # an order may take this long to appear in listings
    close_confirm_s: float = 10.0
    poll_s: float = 0.05


# --- planning: pure, so it is easy to test --------------------------------------


@dataclass(frozen=True)
class Plan:
    """The orders that move our trades to a decision's target."""

    close: tuple[OpenTrade, ...] = ()
    open_side: str | None = None

    @property
    def empty(self) -> bool:
        return not self.close and self.open_side is None


def plan_orders(decision: Decision, trades: Sequence[OpenTrade], instrument: str) -> Plan:
    """Close opposite (and, for a fresh decision, all) trades; open one if not already there.

    Trades on another instrument (the account's instrument was changed) are never the
    target: any decision other than "no change" closes them.
    """
    signal_ = decision.signal
    if signal_ is None:
        return Plan()
    if signal_ is Signal.FLAT:
        return Plan(close=tuple(trades))
    side = signal_.value
    keep = [
        t for t in trades if t.instrument == instrument and t.side == side and not decision.fresh
    ]
    close = tuple(t for t in trades if t not in keep)
    return Plan(close=close, open_side=None if keep else side)


# --- the worker ---------------------------------------------------------------------


class Worker:
    """Runs one account until its stop flag is set (see the module docstring)."""

    def __init__(
        self,
        runner: RunnerSpec,
        spec: AccountSpec,
        client: Client,
        journal: Journal,
        on_tick: Callable[[StrategyContext], object],
        *,
        stop: StopFlag,
        clock: Clock = SYSTEM_CLOCK,
        timing: Timing = Timing(),
    ) -> None:
        self.runner = runner
        self.spec = spec
        self.client = client
        self.journal = journal
        self.on_tick = on_tick
        self.stop = stop
        self.clock = clock  # drives the ticker only; journal and deadlines use wall time
        self.timing = timing
        self.status_path = Path(runner.state_dir) / spec.name / "status.json"
        self.log = logging.getLogger(f"multirun.strategy.{spec.name}")
        self.state = RUNNING
        self.started = time.time()
        self.last_tick: float | None = None
        self.ticks = 0
        self.orders_sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self.halted_reason: str | None = None
        self.strategy_state: dict[str, Any] = journal.load_state()
        self._saved_state = json.dumps(self.strategy_state, sort_keys=True)
        self.ticker: Ticker | None = None
        self.busy = False  # in a tick or closing: where SIGHUP must unwind at once
        # Start-up reconciliation sends nothing, so a stop request may cut it short (an
        # unreachable server would otherwise hold it through every retry).
        self.reconciling = False
        self._visible: set[str] = set()  # orderRefs listed by the server at the last sync
        self._seen_opened: set[str] = set()  # orderRefs this process saw in opened_trades
        self.reconciled = False  # start-up reconciliation done: ticks may begin

    # --- lifecycle ------------------------------------------------------------------

    def run(self) -> int:
        """Reconcile, tick until stopped, apply on_stop; returns the exit code."""
        self.write_status()
        try:
            with self._busy():
                self._reconcile_or_stop()
        except StoppedReconciling:
            return self.stopped_reconciling()
        except Orphaned:
            return self.orphaned()
        try:
            # Scheduled only now: the first tick is the first grid point after reconciling.
            self.ticker = Ticker(self.spec.interval_s, self.tick, stop=self.stop, clock=self.clock)
            log.info(
                "account %s: %s on %s every %ss, %d trade(s) of ours open",
                self.spec.name, self.spec.strategy, self.spec.instrument,
                self.spec.interval_s, len(self.journal.held()),
            )  # fmt: skip
            self.write_status()
            self.ticker.run()
            if self.stop.reason == ORPHANED:
                return self.orphaned()
            return self.finish()
        except Orphaned:
            return self.orphaned()

    def _reconcile_or_stop(self) -> None:
        self.reconciling = True
        try:
            if self.stop.is_set() and self.stop.reason != ORPHANED:
                raise StoppedReconciling()
            self.reconcile()
        except MultirunError as exc:
            self.state = STOPPED
            self.last_error = _describe(exc)
            self.write_status()
            raise
        finally:
            self.reconciling = False

    def reconcile(self) -> None:
        """Settle the journal against the server before the first tick."""
        self._close_send_windows()
        self.sync()
        while self.journal.intents() and not self.stop.is_set():
            self._settle_intents()
            if self.journal.intents():
                self.stop.wait(0.2)
        self.sync()
        self.reconciled = True

    def finish(self) -> int:
        """After a stop request (between ticks): on_stop, final status, exit code."""
        code = EXIT_OK
        if self.spec.on_stop == "close":
            try:
                with self._busy():
                    self.close_all()
            except (MultirunError, OSError) as exc:
                code = exit_code_for(exc) if isinstance(exc, MultirunError) else EXIT_FAILURE
                self.last_error = _describe(exc)
                log.error("on_stop close failed, trades stay journaled: %s", self.last_error)
        else:
            held = self.journal.held()
            log.info("on_stop keep: leaving %d trade(s) open and journaled", len(held))
        self.state = STOPPED
        self.write_status()
        return code

    def stopped_reconciling(self) -> int:
        log.info("stopped before the first tick: our trades stay journaled for the next start")
        self.state = STOPPED
        self.write_status()
        return EXIT_OK

    def orphaned(self) -> int:
        log.warning("supervisor gone (SIGHUP): stopping now, trades left open and journaled")
        self.state = STOPPED
        self.last_error = self.last_error or "stopped: supervisor gone (SIGHUP)"
        with contextlib.suppress(Exception):
            self.write_status()
        return EXIT_OK

    # --- one tick -------------------------------------------------------------------

    def tick(self, tick: Tick) -> None:
        self.ticks += 1
        self.last_tick = tick.started
        if self.state == HALTED:
            self.write_status()
            return
        try:
            with self._busy():
                self._tick(tick)
            self.failures = 0
        except Exception as exc:  # a failed tick is counted and logged, never a crash
            self._failed(exc)
        self.write_status()

    def _tick(self, tick: Tick) -> None:
        held = self.sync()
        trades = [_open_trade(row) for row in held if row.trade_id]
        ctx = self._context(tick, trades)
        decision = Decision.of(self.on_tick(ctx))
        self._save_state(ctx.state)
        plan = plan_orders(decision, trades, self.spec.instrument)
        if not plan.empty:
            self.execute(plan)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = _describe(exc)
        limit = self.spec.guardrails.halt_after_failures
        log.error("tick failed (%d in a row): %s", self.failures, self.last_error)
        if limit and self.failures >= limit:
            self.halt(f"{self.failures} consecutive failed ticks; last: {self.last_error}")

    def halt(self, reason: str) -> None:
        self.state = HALTED
        self.halted_reason = reason
        log.error("HALTED: %s; no more orders until restarted", reason)
        self.write_status()

    def _context(self, tick: Tick, trades: list[OpenTrade]) -> StrategyContext:
        return StrategyContext(
            spec=self.spec,
            state=self.strategy_state,
            log=self.log,
            tick_utc=tick.due_utc,
            open_trades=tuple(trades),
            _quote=lambda symbol: self.client.realtime_price(symbol)[symbol],
            _history=self.client.history_price,
        )

    def _save_state(self, state: dict[str, Any]) -> None:
        self.strategy_state = state
        text = json.dumps(state, sort_keys=True, default=repr)
        if text != self._saved_state:  # one fsync'd transaction only when it changed
            self.journal.save_state(state)
            self._saved_state = text

    # --- execution ------------------------------------------------------------------

    def execute(self, plan: Plan) -> None:
        if plan.close:
            self.close(plan.close)
        if plan.open_side is not None:
            self.open(plan.open_side)

    def close(self, trades: Sequence[OpenTrade]) -> None:
        """Close ``trades`` and confirm it through opened_trades (journaled both ways)."""
        refs = [t.order_ref for t in trades]
        self._await_listed(refs)
        self.journal.mark_close_requested(refs)
        self.write_status()
        self.client.close_trades(
            [t.trade_id for t in trades], confirm_timeout_s=self.timing.close_confirm_s
        )
        self.journal.mark_closed(refs)
        log.info("closed %s", ", ".join(f"{t.side} {t.trade_id} ({t.order_ref})" for t in trades))

    def open(self, side: str) -> None:
        """Open one ``volume`` trade on ``side`` unless a guardrail or unsettled order forbids."""
        refusal = self._refusal()
        if refusal:
            log.warning("not opening %s: %s", side, refusal)
            self.last_error = f"guardrail: {refusal}"
            return
        spec = self.spec
        intent = self.journal.new_intent(spec.instrument, side, spec.volume)
        self.orders_sent += 1
        ack = self._send(intent)
        self.journal.mark_acked(intent.order_ref, ack.trade_id)
        log.info(
            "opened %s %s %s as trade %s (%s)",
            side, spec.volume, spec.instrument, ack.trade_id, intent.order_ref,
        )  # fmt: skip
        self._await_listed([intent.order_ref])

    def _send(self, intent: JournalOrder) -> OrderAck:
        try:
            return self.client.open_order(
                intent.instrument, intent.side, intent.volume, intent.order_ref
            )
        except OrderUncertain:
            # It may be on the server: the next syncs settle it; it is never resent.
            self.journal.mark_send_ended(intent.order_ref)
            raise
        except ApiError as exc:
            # The client guarantees these were not placed (refused, or confirmed absent).
            self.journal.mark_abandoned(intent.order_ref, f"not placed: {exc}")
            raise
        except Exception:
            self.journal.mark_send_ended(intent.order_ref)
            raise

    def _refusal(self) -> str | None:
        guard = self.spec.guardrails
        # Counted from the journal, not from the plan: a safety net against planning bugs.
        open_count = len(self.journal.held())
        unsettled = self.journal.intents()
        if unsettled:
            refs = ", ".join(i.order_ref for i in unsettled)
            return f"order {refs} is not settled yet (never sending a second one meanwhile)"
        if open_count + 1 > guard.max_open_trades:
            return f"max_open_trades {guard.max_open_trades} reached ({open_count} open)"
        sent = self.journal.sent_since(time.time() - 3600)
        if sent >= guard.max_orders_per_hour:
            return f"max_orders_per_hour {guard.max_orders_per_hour} reached"
        return None

    def close_all(self) -> None:
        """on_stop close: settle in-flight orders, close and cancel every trade of ours."""
        deadline = time.time() + max(5.0, self.runner.stop_timeout_s * 0.8)
        while self.journal.intents() and time.time() < deadline:
            self._settle_intents()
            if self.journal.intents():
                time.sleep(0.2)
        for _ in range(3):
            held = self.sync()
            self._await_listed([row.order_ref for row in held])
            opened, pending = self._ours()
            if pending:
                self.client.cancel_orders([t.trade_id for t in pending])
            if not opened:
                break
            try:
                self.close([_trade_view(t) for t in opened])
            except CloseUnconfirmed as exc:
                if time.time() >= deadline:
                    raise
                log.warning("on_stop close: %s; looking again", _describe(exc))
        opened, pending = self._ours()
        if opened or pending:
            raise ApiError(f"on_stop close: {len(opened) + len(pending)} trade(s) still open")
        self.sync()
        log.info("on_stop close: no trade of ours left open")

    # --- reconciling with the server --------------------------------------------------

    def _ours(self, *, with_pending: bool = True) -> tuple[list[Trade], list[Trade]]:
        """Our opened and our pending trades, as the server lists them now."""
        pending = (
            [t for t in self.client.pending_trades() if self.journal.owns(t.order_ref)]
            if with_pending
            else []
        )
        opened = [t for t in self.client.opened_trades() if self.journal.owns(t.order_ref)]
        self._seen_opened.update(t.order_ref for t in opened)
        return opened, pending

    def _pending_may_hold_ours(self) -> bool:
        """Whether a sync must also list pending trades.

        Not when ticking with every trade we hold already seen opened by this process
        and no order in flight: an opened trade never goes back to pending, so the
        listing would find nothing of ours (one request less per tick). Reconciling on
        start, where a lost journal's trades are adopted, always lists both.
        """
        if not self.reconciled or self.journal.intents():
            return True
        return any(row.order_ref not in self._seen_opened for row in self.journal.held())

    def sync(self) -> list[JournalOrder]:
        """Bring the journal in line with the server's listings; returns our held orders."""
        opened, pending = self._ours(with_pending=self._pending_may_hold_ours())
        listed = {t.order_ref: t for t in [*pending, *opened]}  # opened wins a tie
        self._visible = set(listed)
        for trade in listed.values():
            self._record_listed(trade)
        self.journal.mark_listed(
            row.order_ref for row in self.journal.held() if row.order_ref in listed
        )
        now = time.time()
        for row in self.journal.held():
            if row.order_ref not in listed and not self._may_be_unlisted(row, now):
                self.journal.mark_closed([row.order_ref], "no longer listed by the server")
                log.info("trade %s (%s) was closed meanwhile", row.trade_id, row.order_ref)
        for row in self.journal.intents():
            if now >= self._intent_deadline(row):
                self._abandon(row)
        return self.journal.held()

    def _record_listed(self, trade: Trade) -> None:
        row = self.journal.find(trade.order_ref)
        if row is not None and row.state in HELD and row.trade_id == trade.trade_id:
            return
        if row is not None and row.state == "INTENT":
            self.journal.mark_acked(trade.order_ref, trade.trade_id)
            log.info("order %s found on the server as trade %s", trade.order_ref, trade.trade_id)
            return
        self.journal.adopt(
            trade.order_ref, trade.trade_id, trade.instrument, trade.side, trade.volume
        )
        log.warning(
            "adopted trade %s (%s %s %s, %s): ours but not journaled as open",
            trade.trade_id, trade.side, trade.volume, trade.instrument, trade.order_ref,
        )  # fmt: skip

    def _may_be_unlisted(self, row: JournalOrder, now: float) -> bool:
        """A just-acknowledged market order is listed only once filled: give it time.

        Once the server has listed a trade, missing from the listing means closed.
        """
        return row.listed_ts is None and now < self._grace_end(row)

    def _close_send_windows(self) -> None:
        """Journal that intents of a previous (dead) process can no longer be sent.

        Stored, so the reconcile window of such an intent runs from the first restart
        that saw it: a worker killed again and again while waiting still settles it.
        Every intent is a previous process's here (we hold the lock and sent nothing),
        even one stamped after our start by a clock that has since been set back.
        """
        for row in self.journal.intents():
            if row.send_ended_ts is None:
                ended = min(self.started, row.created_ts + MAX_SEND_S)
                self.journal.mark_send_ended(row.order_ref, at=ended)

    def _intent_deadline(self, row: JournalOrder) -> float:
        """When an intent not found on the server can be declared never placed."""
        # No end recorded: the intent is being sent by this very process right now.
        last_send = row.send_ended_ts if row.send_ended_ts is not None else time.time()
        return last_send + self.timing.reconcile_window_s

    def _settle_intents(self) -> None:
        """Ask the server for each unsettled intent by orderRef (find_order)."""
        for row in self.journal.intents():
            trade = self.client.find_order(row.order_ref)
            if trade is not None:
                self.journal.mark_acked(row.order_ref, trade.trade_id)
                log.info("order %s found on the server as trade %s", row.order_ref, trade.trade_id)
            elif time.time() >= self._intent_deadline(row):
                self._abandon(row)

    def _abandon(self, row: JournalOrder) -> None:
        note = "not on the server after the reconcile window"
        self.journal.mark_abandoned(row.order_ref, note)
        log.warning("order %s abandoned: %s", row.order_ref, note)

    def _await_listed(self, refs: Sequence[str]) -> None:
        """Wait (bounded) until just-acknowledged trades show in opened_trades.

        Closing a market order that has not filled yet would be refused while the
        fill still happens later: confirm it is listed before acting on it.
        """
        rows = [self.journal.find(ref) for ref in refs if ref not in self._visible]
        waiting = {r.order_ref: r for r in rows if r is not None and r.trade_id}
        now = time.time()
        deadline = max((self._grace_end(r) for r in waiting.values()), default=now)
        while waiting and time.time() < deadline:
            listed = {t.order_ref for t in self.client.opened_trades()} & set(waiting)
            self._seen_opened |= listed
            self._visible |= listed
            self.journal.mark_listed(listed)
            waiting = {ref: r for ref, r in waiting.items() if ref not in listed}
            if waiting:
                time.sleep(self.timing.poll_s)

    def _grace_end(self, row: JournalOrder) -> float:
        return (row.acked_ts or row.created_ts) + self.timing.reconcile_window_s

    # --- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        expires = getattr(self.client, "token_expires_utc", None)
        next_due = self.ticker.next_due if self.ticker and self.state != STOPPED else None
        return {
            "name": self.spec.name,
            "pid": os.getpid(),
            "state": self.state,
            "started_utc": _iso(self.started),
            "last_tick_utc": _iso(self.last_tick),
            "next_tick_utc": _iso(next_due),
            "open_trades": len(self.journal.held()),
            "token_expires_utc": None if expires is None else _iso_naive(expires),
            "last_error": self.last_error,
            "halted_reason": self.halted_reason,
            "ticks": self.ticks,
            "orders_sent": self.orders_sent,
            "updated_utc": _iso(time.time()),
            "strategy": self.spec.strategy,
            "interval_s": self.spec.interval_s,
            "consecutive_failures": self.failures,
            "stop_reason": self.stop.reason,
        }

    def write_status(self) -> None:
        procutil.write_json_atomic(self.status_path, self.status())

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self.busy = True
        try:
            if self.stop.reason == ORPHANED:  # SIGHUP came just before: do not start work
                raise Orphaned()
            yield
        finally:
            self.busy = False


# --- helpers --------------------------------------------------------------------------


def _open_trade(row: JournalOrder) -> OpenTrade:
    return OpenTrade(row.order_ref, row.trade_id or "", row.instrument, row.side, row.volume)


def _trade_view(trade: Trade) -> OpenTrade:
    return OpenTrade(trade.order_ref, trade.trade_id, trade.instrument, trade.side, trade.volume)


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line (log lines and status fields are single lines)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else utc(ts).isoformat(timespec="milliseconds")


def _iso_naive(moment: Any) -> str:
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return aware.isoformat(timespec="seconds")
    return str(moment)


# --- the entry point ---------------------------------------------------------------------


def run_account(
    runner: RunnerSpec, name: str, *, server_url: str | None = None, supervised: bool = False
) -> int:
    """Run account ``name`` of ``runner`` in the foreground; returns the exit code.

    Installs SIGTERM/SIGINT (graceful: finish the tick, then on_stop) and SIGHUP
    (orphaned: stop within 2 s, close nothing) handlers; main thread only.
    ``server_url`` overrides ``runner.server``; with ``server: sim`` and no
    ``server_url`` an in-process simulator is started (standalone demos).
    ``supervised``: the supervisor stamps each line with the time and the account.
    """
    _configure_logging(name, stamped=not supervised)
    try:
        spec = runner.account(name)
    except KeyError:
        known = ", ".join(a.name for a in runner.accounts) or "none"
        raise UsageError(
            f"no account named {name!r} in {runner.path} (accounts: {known})"
        ) from None
    on_tick = strategies.build(strategies.resolve(spec.strategy, runner.config_dir), spec.params)
    with contextlib.ExitStack() as stack:
        url = server_url or _server_url(runner, stack)
        journal = Journal.for_account(runner.state_dir, spec.name, spec.order_ref_prefix)
        stack.callback(journal.close)
        client = _make_client(url, spec)
        stack.callback(client.close)
        stop = StopFlag()
        stack.callback(stop.close)
        worker = Worker(runner, spec, client, journal, on_tick, stop=stop)
        stack.enter_context(_signals(worker))
        return worker.run()
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


def _server_url(runner: RunnerSpec, stack: contextlib.ExitStack) -> str:
    if not runner.uses_sim:
        return runner.server
    from multirun.sim import SimConfig, SimServer

    sim = stack.enter_context(SimServer(SimConfig()))
    log.info("server: sim: started an in-process simulator at %s", sim.base_url)
    return sim.base_url


def _make_client(url: str, spec: AccountSpec) -> Any:
    from multirun.client import AlgogeneClient

    return AlgogeneClient(
        url,
        spec.user,
        spec.api_key,
        spec.runmode,
        spec.accountid,
        reconcile_window_s=Timing().reconcile_window_s,
    )


@contextlib.contextmanager
def _signals(worker: Worker) -> Iterator[None]:
    """SIGTERM/SIGINT: stop after the current tick. SIGHUP: orphaned, unwind now."""

    def graceful(signum: int, frame: FrameType | None) -> None:
        if not worker.stop.is_set():
            log.info("%s: stopping after the current tick", signal.Signals(signum).name)
        worker.stop.set(signal.Signals(signum).name)
        if worker.reconciling:
            raise StoppedReconciling()

    timers: list[threading.Timer] = []

    def orphaned(signum: int, frame: FrameType | None) -> None:
        worker.stop.reason = ORPHANED  # overrides a graceful stop already under way
        worker.stop.set(ORPHANED)
        if not timers:
            # Last resort if unwinding is stuck in C code: the journal is crash-safe.
            timer = threading.Timer(ORPHAN_EXIT_S, os._exit, args=(EXIT_OK,))
            timer.daemon = True
            timer.start()
            timers.append(timer)
        if worker.busy:
            raise Orphaned()

    handlers = {signal.SIGTERM: graceful, signal.SIGINT: graceful, signal.SIGHUP: orphaned}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()  # unwound in time: the caller decides how the process ends
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure_logging(name: str, *, stamped: bool = True) -> None:
    """One line per event on stderr, unless the host set up logging; ``stamped``: with
    the UTC time and the account's name (a standalone worker's lines have no other)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    stamp = f"%(asctime)s.%(msecs)03dZ %(levelname)s [{name}] " if stamped else "%(levelname)s "
    formatter = logging.Formatter(stamp + "%(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
