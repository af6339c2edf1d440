"""One account's tick loop: tick, ask the strategy, move our trades to its target.

A :class:`Worker` owns one account's client, journal, strategy and ticker
(:mod:`multirun.account.process` builds them and runs it as a process):

1. On start it reconciles the journal with the server (:mod:`multirun.account.reconcile`);
   an intent that may have been sent is never sent again.
2. On each tick it syncs with the server's trade listings, calls the strategy, and
   executes the decision: close what is on the wrong side, open one trade of
   ``volume`` when not already there. Every order's intent is journaled before
   it is sent. Only trades whose orderRef is the account's prefix followed by
   digits are ever touched (see :meth:`Journal.owns`).
3. Guardrails (:mod:`multirun.account.guardrails`, which words each rule) refuse opens beyond
   ``max_open_trades``, ``max_orders_per_hour`` or ``max_volume`` or while an order is
   UNCERTAIN, and halt the account after ``halt_after_failures`` failures in a row
   (HALTED: no more orders, still writing its status, until stopped).
4. Money limits and trading hours (issue 24): :meth:`Worker.pause`, :meth:`Worker.resume`
   and :meth:`Worker.flatten` (the supervisor's commands, and a breach of the account's own
   ``risk``, :mod:`multirun.account.risk`) make the account PAUSED: the strategy still
   ticks, closes and FLAT still act, nothing new opens; the pause is journaled, so a
   restarted worker starts PAUSED. Outside its ``trading_hours``
   (:mod:`multirun.account.trading_hours`) a tick sends no request at all (PAUSED, outside
   trading hours), except to close what it holds after ``to`` with ``flatten_at_end``.
   Each tick tells ``on_money`` the day's P&L and the equity estimate (the supervisor sums
   them for the file's limits).
5. A strategy call running past ``tick_timeout`` is interrupted (SIGALRM, see
   :mod:`multirun.account.alarm`): a failed tick, logged with the strategy's stack.
6. Once stopped (between ticks; a tick under way opens nothing more), ``on_stop``:
   close our trades until the stop deadline (:mod:`multirun.account.on_stop`), or keep them
   journaled. A stop during start-up reconciliation finishes reconciling first. What
   is left open is named and the exit code is 3. Orphaned (the supervisor died):
   unwind at once, close nothing.

The account's ``status.json``: :mod:`multirun.account.status_file` (what, and how often). The
heartbeat file is touched while idle (:func:`multirun.account.alarm.heartbeat_every`), around
every tick and strategy call, and before every request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from multirun.account import alarm, guardrails, trading_hours
from multirun.account.journal.store import Journal, JournalOrder
from multirun.account.observer import NULL_OBSERVER, WorkerObserver
from multirun.account.on_stop import HARD_MARGIN, STOP_MARGIN, Closer, Outcome, StopWindow
from multirun.account.orders_plan import OrderPlan, open_trade, plan_orders
from multirun.account.pricing import Pricing
from multirun.account.reconcile import DEFAULT_TIMING, Listings, Reconciler, Timing
from multirun.account.risk import Money, MoneyWatch, Pause
from multirun.account.status_file import StatusFile
from multirun.account.ticker import StopFlag, Tick, Ticker
from multirun.api.models import Bar, OrderAck, Quote
from multirun.api.transport import is_retryable
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.clock import SYSTEM_CLOCK, Clock, hms, iso_ms, iso_of
from multirun.core.errors import (
    EXIT_API,
    EXIT_OK,
    ApiError,
    AuthError,
    Interrupted,
    JournalError,
    MultirunError,
    OrderRejected,
    OrderUncertain,
    RateLimitError,
    one_line,
)
from multirun.core.redact import Redactor
from multirun.core.statedir import StateDir
from multirun.core.statefiles import WorkerStatus
from multirun.core.states import State
from multirun.strategies.context import Decision, OpenTrade, StrategyContext

log = logging.getLogger("multirun.worker")

ORPHANED = "orphaned"  # the stop reason when the supervisor is gone
OUTSIDE_HOURS = "outside trading hours"  # the PAUSED reason outside the trading window
OPERATOR_RESUME = "resumed by operator"
# Start-up reconciliation refused for a passing reason (a session token refused after its
# renewal, throttling): retried after these pauses, doubling from the first to the last.
START_BACKOFF_S = (1.0, 30.0)


class Client(Listings, Protocol):
    """What the worker uses of :class:`multirun.api.client.AlgogeneClient`."""

    @property
    def token_expires_utc(self) -> datetime | None: ...
    def realtime_price(self, symbols: str) -> dict[str, Quote]: ...
    def history_price(self, instrument: str, interval: str, count: int) -> list[Bar]: ...
    def open_order(
        self, instrument: str, buysell: str, volume: float, order_ref: str
    ) -> OrderAck: ...
    def close_trades(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...,
        order_ref: str | None = ...,
    ) -> None: ...  # fmt: skip
    def cancel_orders(
        self, trade_ids: Sequence[str], *, confirm_timeout_s: float = ...
    ) -> None: ...
    def share_tokens(self, state_dir: Path) -> None: ...
    def close(self) -> None: ...


class Orphaned(BaseException):  # a control-flow signal, like KeyboardInterrupt
    """SIGHUP: the supervisor is gone. Unwinds the current tick; nothing is closed."""


class StoppedReconciling(BaseException):  # a control-flow signal, like KeyboardInterrupt
    """SIGTERM/SIGINT during start-up reconciliation with nothing journaled: unwind now."""


class Forbidden(BaseException):  # a control-flow signal: the ticker must not swallow it
    """A 403 during a tick: unwinds the ticker; :meth:`Worker.run` raises ``error``."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(str(error))
        self.error = error


class StrategyTimeout(MultirunError):
    """The strategy's on_tick ran past tick_timeout and was interrupted."""

    def __init__(self, message: str, stack: list[str]) -> None:
        super().__init__(message)
        self.stack = stack


# --- the worker ---------------------------------------------------------------------


class Worker:
    """Runs one account until its stop flag is set (see the module docstring).

    Built by :func:`build_worker` (its reconciler, pricing and status file made for it).
    ``observer`` hears its ticks and order sends (telemetry); ``on_up`` is called once
    reconciled and scheduled (the supervisor's RUNNING).
    """

    def __init__(
        self,
        runner: RunnerSpec,
        spec: AccountSpec,
        client: Client,
        journal: Journal,
        on_tick: Callable[[StrategyContext], object],
        *,
        reconciler: Reconciler,
        pricing: Pricing,
        money: MoneyWatch,
        status_file: StatusFile,
        stop: StopFlag,
        started: float,
        clock: Clock = SYSTEM_CLOCK,
        timing: Timing = DEFAULT_TIMING,
        window: StopWindow | None = None,
        heartbeat: Callable[[], None] | None = None,
        observer: WorkerObserver = NULL_OBSERVER,
        on_up: Callable[[], None] | None = None,
        account_lost: Callable[[], str | None] = lambda: None,
        check_ownership: Callable[[], None] = lambda: None,
        on_condition: Callable[[str, str | None], None] = lambda state, reason: None,
        on_money: Callable[[float, float | None], None] = lambda day_pnl, equity: None,
    ) -> None:
        self.runner = runner
        self.account_lost = account_lost  # why the account is no longer ours alone, or None
        # Reads the server for another trader of this account (ownership.EpochWatch): run
        # from the heartbeat between ticks, so at least once a minute whatever the interval.
        self.check_ownership = check_ownership
        self.on_up = on_up or (lambda: None)
        # Told each change of (state, reason: halted or paused): the supervisor's copy,
        # true when status.json cannot be written (a full disk)
        self.on_condition = on_condition
        # Told once a tick (day's P&L, equity estimate or None): the supervisor sums them
        # for the file's money limits
        self.on_money = on_money
        self.told: tuple[str, str | None] = (State.RUNNING, None)
        self.spec = spec
        self.client = client
        self.journal = journal
        self.on_tick = on_tick
        self.reconciler = reconciler
        self.pricing = pricing  # prices and equity into the journal
        self.stop = stop
        self.clock = clock  # drives the ticker only; journal and deadlines use wall time
        self.timing = timing
        self.observer = observer
        self.status_file = status_file
        self.status_path = status_file.path
        account = StateDir(runner.state_dir).account(spec.name)
        self._heartbeat = heartbeat or alarm.Heartbeat(account.heartbeat)
        self.window = window or StopWindow(stop)  # the client's interrupt (see onstop)
        self.left_open: Outcome | None = None  # what on_stop close could not close
        self.log = logging.getLogger(f"multirun.strategy.{spec.name}")
        self.state = State.RUNNING
        self.started = started
        self.last_tick: float | None = None
        self.ticks = 0
        self.orders_sent = 0
        self.orders_refused = 0  # refused by the server: told as `rejected` by the notifier
        self.failures = 0  # consecutive failed ticks
        self.order_failures = 0  # consecutive failed orders (no-op ticks do not reset it)
        self.status_failures = 0  # consecutive ticks whose status could not be written
        self.blocked: tuple[str, str] | None = None  # the guardrail blocking opens: kind, why
        # Until when (clock time) the server asked us to send nothing (a 429's Retry-After)
        self.throttled_until: float | None = None
        self._ordering = False  # in execute(): a failure now is a failed order
        self._redactor = Redactor([spec.api_key.reveal()])
        self.last_error: str | None = None
        self.halted_reason: str | None = None
        self.strategy_state: dict[str, Any] = journal.load_state()
        self._saved_state = json.dumps(self.strategy_state, sort_keys=True)
        self.ticker: Ticker | None = None
        self.busy = False  # in a tick or closing: where SIGHUP must unwind at once
        # A stop request cuts start-up reconciliation short only when the journal holds
        # nothing of ours (it sends nothing); otherwise it ends, then on_stop applies.
        self.reconciling = False
        self.nothing_journaled = not journal.held() and not journal.intents()
        # Money limits (risk.py; told each close's P&L by pricing), and the pause
        # journaled (if any): a restarted worker starts PAUSED, goes on with a flatten
        self.money = money
        recorded = journal.pause()
        self.paused: Pause | None = None if recorded is None else Pause.read(recorded)
        self.money.restore(journal.resumed())  # a resume today counts after a restart
        self.outside_hours = False  # the last tick found the trading window closed
        self.refused_paused: str | None = None  # the pause an open was last refused for
        self._settle_state()

    # --- lifecycle ------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Show a sign of life; and halt if the account stopped being ours alone (the
        journal already refuses every order from the moment that was found: this makes
        status say so within a heartbeat, idle or ticking)."""
        self._heartbeat()
        if not self.busy and self.reconciler.reconciled:
            self.check_ownership()
        reason = self.account_lost()
        if reason is not None and self.state != State.HALTED:
            self.halt(reason)

    def run(self) -> int:
        """Reconcile, tick until stopped, apply on_stop; returns the exit code."""
        self.heartbeat()
        self.write_status(force=True)
        try:
            with self._busy():
                self._reconcile_or_stop()
        except StoppedReconciling:
            return self.stopped_reconciling()
        except Orphaned:
            return self.orphaned()
        try:
            if self.stop.is_set():  # during reconciliation: on_stop reconciles, then applies
                return self.orphaned() if self.stop.reason == ORPHANED else self.finish()
            self._first_sample()
            # Scheduled only now: the first tick is the first grid point after reconciling.
            self.ticker = Ticker(
                self.spec.interval_s, self.tick, stop=self.stop, clock=self.clock,
                heartbeat=self.heartbeat, account=self.spec.name,
                peers=self.runner.names_on_interval(self.spec.interval_s),
                spread_s=self.runner.tick_spread_s,
                heartbeat_s=alarm.heartbeat_every(self.runner.watchdog_timeout_s),
            )  # fmt: skip
            log.info(
                "account %s: %s on %s every %ss, %d trade(s) of ours open",
                self.spec.name, self.spec.strategy, self.spec.instrument,
                self.spec.interval_s, len(self.journal.held()),
            )  # fmt: skip
            if self.paused is not None:
                log.warning("PAUSED (%s): nothing opens until `multirun resume`%s",
                            self.paused.reason, self._lifts_text())  # fmt: skip
            self.write_status(force=True)  # now with its next tick
            self.on_up()
            self.ticker.run()
            if self.stop.reason == ORPHANED:
                return self.orphaned()
            return self.finish()
        except Orphaned:
            return self.orphaned()
        except Forbidden as forbidden:  # FATAL (see account.process): no on_stop either
            raise forbidden.error from None

    def _reconcile_or_stop(self) -> None:
        self.reconciling = True
        try:
            if self.stop.is_set() and self.stop.reason != ORPHANED:
                raise StoppedReconciling()
            self._reconcile_until_answered()
        except (MultirunError, Interrupted) as exc:
            if self.stop.is_set():  # on_stop reconciles again, within the stop deadline
                log.info("stop requested while reconciling (%s): on_stop next", one_line(exc))
                return
            self.state = State.STOPPED
            self.last_error = self._text(one_line(exc))
            self.write_status()
            raise
        finally:
            self.reconciling = False

    def _reconcile_until_answered(self) -> None:
        """:meth:`reconcile`; refused for a passing reason (a token refused even after its
        renewal, a 429), retried with backoff (and at least the server's Retry-After), as
        a tick would be, until it succeeds or a stop is requested."""
        attempt = 0
        while True:
            try:
                self.reconcile()
                self.last_error = None
                return
            except (AuthError, RateLimitError) as exc:
                if not is_retryable(exc) or self.stop.is_set():
                    raise
                error: AuthError | RateLimitError = exc
            first, longest = START_BACKOFF_S
            delay = min(longest, first * 2**attempt)
            attempt += 1
            if isinstance(error, RateLimitError) and error.retry_after_s is not None:
                self._throttle(error.retry_after_s)
                delay = max(delay, error.retry_after_s)
            self.last_error = self._text(one_line(error))
            log.warning("start-up reconciliation: %s; retrying in %.1f s (attempt %d)",
                        self.last_error, delay, attempt + 1)  # fmt: skip
            self.write_status(force=True)
            if self._pause(delay):
                raise error  # stop requested: on_stop next (see _reconcile_or_stop)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` on the clock, beating the heartbeat; True if stop was requested."""
        beat = alarm.heartbeat_every(self.runner.watchdog_timeout_s)
        end = self.clock.monotonic() + seconds
        while (left := end - self.clock.monotonic()) > 0:
            if self.clock.wait(self.stop, min(left, beat)):
                return True
            self.heartbeat()
        return self.stop.is_set()

    def _throttle(self, seconds: float) -> None:
        """The server asked for ``seconds`` without requests: no tick sends any until then."""
        until = self.clock.time() + seconds
        self.throttled_until = max(until, self.throttled_until or until)
        log.warning("server asked us to wait %g s (Retry-After): sending nothing until %s",
                    seconds, iso_ms(self.throttled_until))  # fmt: skip

    def _throttled(self, now: float) -> bool:
        """Whether the server's Retry-After still holds at ``now`` (clock time)."""
        if self.throttled_until is not None and now >= self.throttled_until:
            self.throttled_until = None
            log.info("the server's Retry-After has passed: sending again")
        return self.throttled_until is not None

    def reconcile(self) -> None:
        """Settle the journal against the server before the first tick; a new journal
        that adopted trades of ours (a reset or deleted state directory) says so."""
        self.reconciler.reconcile()
        ours = self.reconciler.adopted_on_start
        if self.journal.is_new and ours:
            log.warning(
                "journal %s is new, but the server lists %d trade(s) of ours: %s; adopted "
                "(was the state directory deleted or reset?); new orderRefs use epoch %s",
                self.journal.path, len(ours), ", ".join(ours), self.journal.epoch,
            )  # fmt: skip

    def sync(self) -> list[JournalOrder]:
        """Bring the journal in line with the server's listings; returns our held orders."""
        return self.reconciler.sync()

    def finish(self) -> int:
        """After a stop request (between ticks): on_stop, final status, exit code."""
        code = EXIT_OK
        if self.spec.on_stop == "close":
            waited_out = self._await_throttle()
            with self._busy():
                outcome = self.close_all(once=not waited_out)
            if not outcome.ok:
                code = EXIT_API
                self.left_open = outcome
                self.last_error = f"on_stop close: {len(outcome.left)} trade(s) left open"
                log.error("on_stop close: left open: %s", "; ".join(outcome.left))
            if outcome.unjournaled:
                log.error("%s", outcome.unjournaled_line(self.spec.name))
        else:
            held = self.journal.held()
            log.info("on_stop keep: leaving %d trade(s) open and journaled", len(held))
        self.pricing.record(final=True)
        self.state = State.STOPPED
        self.write_status(force=True)
        return code

    def _await_throttle(self) -> bool:
        """Before on_stop's close: the rest of a Retry-After, if it ends before the close
        must be done (the stop deadline). False when it ends past that deadline: the close
        is then tried once, not until the deadline (the server said it would not listen)."""
        if not self._throttled(self.clock.time()) or self.throttled_until is None:
            return True
        left = self.throttled_until - self.clock.time()
        began = self.stop.set_at if self.stop.set_at is not None else time.monotonic()
        deadline = began + self.runner.stop_timeout_s * STOP_MARGIN
        if time.monotonic() + left >= deadline:
            log.warning("on_stop close: the server's Retry-After ends after the stop "
                        "deadline: trying once, now")  # fmt: skip
            return False
        log.info("on_stop close: waiting %.1f s first, as the server asked (Retry-After)", left)
        beat = alarm.heartbeat_every(self.runner.watchdog_timeout_s)
        end = time.monotonic() + left
        while (rest := end - time.monotonic()) > 0 and self.stop.reason != ORPHANED:
            time.sleep(min(rest, beat))  # the stop flag is set: its wait would not wait
            self.heartbeat()
        return True

    def stopped_reconciling(self) -> int:
        log.info("stopped before the first tick: our trades stay journaled for the next start")
        self.state = State.STOPPED
        self.write_status(force=True)
        return EXIT_OK

    def orphaned(self) -> int:
        log.warning("supervisor gone (SIGHUP): stopping now, trades left open and journaled")
        self.state = State.STOPPED
        self.last_error = self.last_error or "stopped: supervisor gone (SIGHUP)"
        with contextlib.suppress(Exception):
            self.write_status(force=True)
        return EXIT_OK

    # --- one tick -------------------------------------------------------------------

    def tick(self, tick: Tick) -> None:
        """One tick, told to the observer as it starts and ends."""
        self.observer.tick_started(tick)
        failures = self.failures
        try:
            self._tick_or_halted(tick)
        finally:
            self.observer.tick_ended(
                tick,
                failed=self.failures > failures,
                healthy=self.failures == 0 and self.state != State.HALTED,
            )

    def _tick_or_halted(self, tick: Tick) -> None:
        self.heartbeat()
        self.ticks += 1
        self.last_tick = tick.started
        if self.state == State.HALTED:
            self.write_status(force=True)  # its only work: its ticks still show
            return
        if self._closed_hours(tick):  # outside the trading window: not one request
            self.write_status()
            return
        if self._throttled(tick.started):  # the server asked for quiet: not one request
            self.write_status()
            return
        try:
            # Writes that protect no order (prices, listed times, the strategy's state)
            # go with the tick's next order write, or in one commit at its end.
            with self.journal.batch():
                self._guarded_tick(tick)
                self.pricing.record()
                self._watch_money()
        except JournalError as exc:  # those writes could not be committed
            self._failed(exc)
        self.heartbeat()
        self.write_status()
        self._count_status_failure()

    def _guarded_tick(self, tick: Tick) -> None:
        try:
            with self._busy():
                self._tick(tick)
            self.failures = 0
        except Interrupted:
            log.info("tick %d cut short by the stop request", tick.number)
        except AuthError as exc:
            if exc.status == 403:  # the server forbids this account: no retry changes that
                self.forbidden(exc)
                raise Forbidden(exc) from None
            self._failed(exc)
        except Exception as exc:  # a failed tick is counted and logged, never a crash
            self._failed(exc)
        finally:
            self._ordering = False

    def _count_status_failure(self) -> None:
        self.status_failures = self.status_failures + 1 if self.status_failing else 0
        reason = guardrails.status_halt(self.spec, self.status_failures, self.status_file.why)
        if reason is not None and self.state != State.HALTED:
            self.halt(reason)

    def _tick(self, tick: Tick) -> None:
        paused = self.paused
        if paused is not None and paused.until is not None and time.time() >= paused.until:
            self.resume(f"a new trading day: {paused.reason} was the day before's")
        if self.paused is not None and self.paused.flatten:  # cut short (or restarted): on
            self._flatten_now()
        held = self.sync()
        if self.reconciler.extras:
            self._ordering = True
            self.reconciler.close_extras()
            self._ordering = False
        trades = [open_trade(row) for row in held if row.trade_id]
        ctx = self._context(tick, trades)
        decision = Decision.of(self._ask(ctx))
        self._save_state(ctx.state)
        plan = plan_orders(decision, trades, self.spec.instrument)
        sent = False
        if not plan.empty:
            self._ordering = True
            sent = self.execute(plan)
            self._ordering = False
        if sent:
            self.order_failures = 0
        if self.blocked is not None and self._refusal() is None:
            log.info("guardrail cleared (%s): opening again when the strategy asks",
                     self.blocked[1])  # fmt: skip
            self.blocked = None

    def _ask(self, ctx: StrategyContext) -> object:
        """The strategy's on_tick, interrupted past tick_timeout (see ``account.alarm``)."""
        seconds = self.spec.tick_timeout_s
        self.heartbeat()
        try:
            with alarm.deadline(seconds, "on_tick", below="_ask"):
                return self.on_tick(ctx)
        except alarm.DeadlinePassed as late:
            raise StrategyTimeout(
                f"strategy {self.spec.strategy}: on_tick ran past tick_timeout ({seconds} s) "
                "and was interrupted",
                late.stack,
            ) from None
        finally:
            self.heartbeat()

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, RateLimitError) and exc.retry_after_s is not None:
            self._throttle(exc.retry_after_s)
        self.failures += 1
        if self._ordering:
            self.order_failures += 1
        self.last_error = self._text(one_line(exc))
        # The traceback goes to worker.log only (see multirun.supervisor.output); a timeout's is
        # ours, not the strategy's: its stack is logged below instead.
        trace = None if isinstance(exc, StrategyTimeout) else exc
        log.error("tick failed (%d in a row): %s", self.failures, self.last_error, exc_info=trace)
        if isinstance(exc, StrategyTimeout):
            log.error("strategy stack when interrupted: %s", " > ".join(exc.stack) or "?")
        reason = guardrails.failure_halt(
            self.spec, self.failures, self.order_failures, self.last_error
        )
        if reason is not None:
            self.halt(reason)

    def forbidden(self, exc: AuthError) -> None:
        """A 403: the worker ends (FATAL, exit 78); status says why, our trades stay
        journaled (a server that forbids the account would refuse closing them too)."""
        self.state = State.STOPPED
        self.last_error = self._text(one_line(exc))
        log.error("account forbidden by the server: %s; stopping", self.last_error)
        self.write_status(force=True)

    def _text(self, text: str) -> str:
        """Text that may quote a server, fit to record: secrets and their fragments masked."""
        return self._redactor.server_text(text, limit=400)

    def halt(self, reason: str) -> None:
        self.state = State.HALTED
        self.halted_reason = reason
        log.error("HALTED: %s; no more orders until restarted", reason)
        self.write_status()

    # --- pause, resume, flatten (issue 24) ---------------------------------------------

    def pause(self, reason: str, *, until: float | None = None) -> None:
        """No new opens from now on (the strategy still ticks; closes and FLAT still act),
        PAUSED with ``reason``; journaled before returning. It lifts by itself at
        ``until`` (by default a ``daily loss ...`` pause at the next day's start), else
        only by :meth:`resume`."""
        self._record_pause(Pause(reason, time.time(), until or self.money.lifts_at(reason)))
        log.warning("PAUSED: %s; nothing opens until `multirun resume`%s", reason,
                    self._lifts_text())  # fmt: skip

    def resume(self, reason: str = OPERATOR_RESUME) -> None:
        """Clear any pause (the operator's, a breach's; journaled); the drawdown and the
        day's loss count from here (:meth:`MoneyWatch.resumed`). Outside the trading
        window the account stays PAUSED for that."""
        was = self.paused
        self._record_pause(None, resumed=self.money.resumed())
        if was is not None:
            log.warning("RESUMED (%s): was paused: %s", reason, was.reason)
        if self.outside_hours:
            log.info("still outside trading hours: nothing opens until the window opens")

    def flatten(self, reason: str, *, until: float | None = None) -> None:
        """Close everything held (each trade once, confirmed by the server: on_stop's
        close path), then stay PAUSED with ``reason``. Journaled first: a worker
        restarted meanwhile starts paused and goes on closing. Anything the server would
        not close yet is tried again at each tick. ``until``: as :meth:`pause`'s."""
        lifts = until or self.money.lifts_at(reason)
        unjournaled: JournalError | None = None
        try:
            self._record_pause(Pause(reason, time.time(), lifts, flatten=True))
        except JournalError as exc:  # a full disk: close all the same, then say so
            unjournaled = exc
            log.error("flatten: the pause could not be journaled (%s): closing anyway", exc)
        log.warning("FLATTEN: %s: closing everything held, then PAUSED", reason)
        if self.busy:  # a breach inside a tick
            self._flatten_now()
        else:
            with self._busy(), self.journal.batch():
                self._flatten_now()
        if unjournaled is not None:
            raise unjournaled

    def _flatten_now(self) -> None:
        """One bounded attempt at closing everything (a stop's budget at most); a pause
        that was flattening is then marked done."""
        if not self._close_everything():
            return
        if self.paused is not None and self.paused.flatten:
            self._record_pause(self.paused.done_flattening())
        log.info("flatten: nothing of ours open; PAUSED until `multirun resume`%s",
                 self._lifts_text())  # fmt: skip

    def _close_everything(self) -> bool:
        """Close every trade of ours (on_stop's Closer, within a stop's budget); whether
        nothing of ours is left (else what is left is logged, for the next tick)."""
        closer = Closer(
            self.client, self.journal, self.reconciler, StopWindow(self.stop),
            confirm_s=self.timing.close_confirm_s, heartbeat=self.heartbeat,
            on_closed=self.pricing.closed, purpose="flatten",
        )  # fmt: skip
        began = time.monotonic()
        budget = self.runner.stop_timeout_s
        outcome = closer.run(began + budget * STOP_MARGIN, began + budget * HARD_MARGIN)
        with contextlib.suppress(JournalError):  # a figure only: priced again next tick
            self.pricing.price()
        if not outcome.ok:
            log.error("flatten: %d trade(s) still open, trying again next tick: %s",
                      len(outcome.left), "; ".join(outcome.left))  # fmt: skip
        return outcome.ok

    def _record_pause(self, pause: Pause | None, *, resumed: str | None = None) -> None:
        """Take ``pause`` (None: none) at once, then journal it (with what a resume
        counts from): a journal that cannot be written (a full disk) raises, but the
        pause holds in this worker meanwhile."""
        self.paused = pause
        self._settle_state()
        try:
            self.journal.record_pause(None if pause is None else pause.to_json(), resumed=resumed)
        finally:
            self.write_status(force=True)

    def _lifts_text(self) -> str:
        until = None if self.paused is None else self.paused.until
        return "" if until is None else f" (or {iso_ms(until)}: the day's end)"

    def _settle_state(self) -> None:
        """RUNNING or PAUSED after a pause, resume or trading-window change (HALTED and
        STOPPED stay as they are)."""
        if self.state in (State.RUNNING, State.PAUSED):
            paused = self.paused is not None or self.outside_hours
            self.state = State.PAUSED if paused else State.RUNNING

    def paused_reason(self) -> str | None:
        """Why nothing opens now (a journaled pause first, then the trading hours)."""
        if self.paused is not None:
            return self.paused.reason
        return OUTSIDE_HOURS if self.outside_hours else None

    def _watch_money(self) -> None:
        """After each tick's pricing: the money limits (no request, no journal read), the
        supervisor told, a breach acted on, a daily-loss pause lifted at the day's end."""
        money = self._observe_money()
        self.on_money(money.day_pnl, money.equity)
        if self.paused is not None:
            return
        breach = self.money.breach(money)
        if breach is None:
            return
        on_breach = self.spec.risk.on_breach if self.spec.risk else "pause"
        if on_breach == "flatten":
            self.flatten(breach)
        else:
            self.pause(breach)

    def _observe_money(self) -> Money:
        """The money now, from what pricing last saw: the listings' unrealized P&L of
        what the journal holds (cached in a tick's batch), the last /balance sample."""
        unrealized = self.pricing.unrealized_of(self.journal.held())
        balance = self.pricing.balance
        return self.money.observe(
            time.time(), unrealized, None if balance is None else balance.nav,
            self.pricing.sampled_at, None if balance is None else balance.unrealized_pl,
        )  # fmt: skip

    def _first_sample(self) -> None:
        """Once reconciled, before the first tick: the NAV (one ``/balance`` read, never
        failing), so the drawdown's first peak is the NAV before anything this run
        opens, not after the first trade's spread."""
        with contextlib.suppress(JournalError), self._busy(), self.journal.batch():
            self.pricing.sample(force=True)
        with contextlib.suppress(JournalError):
            self._observe_money()

    def _closed_hours(self, tick: Tick) -> bool:
        """Outside the trading window: PAUSED, and True (the tick sends nothing), except
        to close what is held with ``flatten_at_end``. Inside: False."""
        hours = self.spec.trading_hours
        if hours is None:
            return False
        now = tick.started
        if trading_hours.is_open(hours, now):
            if self.outside_hours:
                self.outside_hours = False
                self._settle_state()
                closes = trading_hours.closes_at(hours, now)
                log.info("trading hours: open until %s UTC", hms(closes or now))
            return False
        if not self.outside_hours:
            self.outside_hours = True
            self._settle_state()
            opens = trading_hours.opens_at(hours, now)
            log.info("%s (%s): no request until %s", OUTSIDE_HOURS, hours.describe(),
                     "later" if opens is None else iso_ms(opens))  # fmt: skip
        try:
            if hours.flatten_at_end and (self.journal.held() or self.journal.intents()):
                log.info("trading hours ended: closing what is held (flatten_at_end)")
                with self._busy(), self.journal.batch():
                    if self._close_everything():
                        log.info("flatten_at_end: nothing of ours open")
            # No request: the last prices seen (a new day's start still counts from
            # zero), so the supervisor's sum keeps this account
            money = self._observe_money()
            self.on_money(money.day_pnl, money.equity)
        except JournalError as exc:  # a journal that cannot be read: a failed tick
            self._failed(exc)
        return True

    def _context(self, tick: Tick, trades: list[OpenTrade]) -> StrategyContext:
        return StrategyContext(
            spec=self.spec,
            state=self.strategy_state,
            log=self.log,
            tick_utc=tick.due_utc,
            open_trades=tuple(trades),
            _quote=lambda sym: self.pricing.quote_seen(self.client.realtime_price(sym)[sym]),
            _history=self.client.history_price,
        )

    def _save_state(self, state: dict[str, Any]) -> None:
        self.strategy_state = state
        text = json.dumps(state, sort_keys=True, default=repr)
        if text != self._saved_state:  # one fsync'd transaction only when it changed
            self.journal.save_state(state)
            self._saved_state = text

    # --- execution ------------------------------------------------------------------

    def execute(self, plan: OrderPlan) -> bool:
        """Carry out ``plan``; whether an order was sent and succeeded."""
        sent = False
        if plan.close:
            self.close(plan.close)
            sent = True
        if plan.open_side is not None:
            sent = self.open(plan.open_side) or sent
        return sent

    def close(self, trades: Sequence[OpenTrade]) -> None:
        """Close ``trades`` and confirm it through the server (journaled both ways): one
        trade by its orderRef's history, whose close row pricing then reads for the P&L
        without asking again (several: through opened_trades)."""
        refs = [t.order_ref for t in trades]
        self.reconciler.await_listed(refs)
        self.journal.mark_close_requested(refs)
        self.client.close_trades(
            [t.trade_id for t in trades], confirm_timeout_s=self.timing.close_confirm_s,
            order_ref=refs[0] if len(refs) == 1 else None,
        )  # fmt: skip
        self.journal.mark_closed(refs)
        self.pricing.closed(refs)
        self.pricing.price()  # logs "closed BUY 0.01 BTCUSD @ 97110.0, P&L +0.98 (...)"

    def open(self, side: str) -> bool:
        """Open one ``volume`` trade on ``side`` unless a guardrail or unsettled order
        forbids; whether it was opened."""
        if self.stop.is_set():
            log.info("not opening %s: stop requested", side)
            return False
        paused = self.paused_reason()
        if paused is not None:
            if self.refused_paused != paused:  # once per pause, as a guardrail is
                log.info("not opening %s: PAUSED (%s)", side, paused)
            self.refused_paused = paused
            return False
        refusal = self._refusal()
        if refusal is not None:
            if self.blocked is None or self.blocked[0] != refusal[0]:
                log.warning("not opening %s: %s (logged again when it clears)", side, refusal[1])
            self.blocked = refusal
            self.last_error = f"guardrail: {refusal[1]}"
            return False
        if self.blocked is not None:
            log.info("guardrail cleared (%s)", self.blocked[1])
            self.blocked = None
        spec = self.spec
        intent = self.journal.new_intent(spec.instrument, side, spec.volume)
        self.orders_sent += 1
        ack = self._send(intent)
        self.journal.mark_acked(intent.order_ref, ack.trade_id)
        try:
            self.reconciler.await_listed([intent.order_ref])  # records the fill price
        finally:
            price = self.journal.get(intent.order_ref).fill_price
            log.info(
                "opened %s %s %s @ %s (trade %s, %s)", side, spec.volume, spec.instrument,
                "?" if price is None else f"{price:g}", ack.trade_id, intent.order_ref,
            )  # fmt: skip
        return True

    def _send(self, intent: JournalOrder) -> OrderAck:
        """Place ``intent``'s order; the observer hears how it went and how long it took."""
        began, error = time.monotonic(), None
        try:
            return self._place(intent)
        except BaseException as exc:
            error = exc
            self.orders_refused += isinstance(exc, OrderRejected)
            raise
        finally:
            self.observer.order_sent(intent.side, error, time.monotonic() - began)

    def _place(self, intent: JournalOrder) -> OrderAck:
        try:
            return self.client.open_order(
                intent.instrument, intent.side, intent.volume, intent.order_ref
            )
        except OrderUncertain:
            # It may be on the server: the next syncs settle it; it is never resent.
            self.journal.mark_send_ended(intent.order_ref)
            raise
        except ApiError as exc:
            # The client guarantees these were not placed (refused, or never sent).
            self.journal.mark_abandoned(intent.order_ref, self._text(f"not placed: {exc}"))
            raise
        except Exception:
            self.journal.mark_send_ended(intent.order_ref)
            raise

    def _refusal(self) -> tuple[str, str] | None:
        """Why no trade may be opened now, as (kind, message), or None (see
        :func:`multirun.account.guardrails.refusal`)."""
        return guardrails.refusal(self.spec, self.journal, self.reconciler, time.time())

    def close_all(self, *, once: bool = False) -> Outcome:
        """on_stop close: settle, close and cancel every trade of ours until the stop
        deadline (:class:`multirun.account.on_stop.Closer`), or in one round with ``once``;
        returns what is left."""
        closer = Closer(
            self.client, self.journal, self.reconciler, self.window,
            confirm_s=self.timing.close_confirm_s, heartbeat=self.heartbeat,
            on_closed=self.pricing.closed,
        )  # fmt: skip
        began = self.stop.set_at if self.stop.set_at is not None else time.monotonic()
        budget = self.runner.stop_timeout_s
        deadline = time.monotonic() if once else began + budget * STOP_MARGIN
        return closer.run(deadline, began + budget * HARD_MARGIN)

    # --- status -----------------------------------------------------------------------

    def status(self) -> WorkerStatus:
        """What status.json says now (see :mod:`multirun.account.status_file`)."""
        expires = self.client.token_expires_utc
        ticker = self.ticker
        next_due = ticker.next_due if ticker and self.state != State.STOPPED else None
        status = WorkerStatus(
            name=self.spec.name,
            pid=os.getpid(),
            state=self.state,
            started_utc=iso_ms(self.started),
            last_tick_utc=iso_ms(self.last_tick),
            next_tick_utc=iso_ms(next_due),
            open_trades=len(self.journal.held()),
            token_expires_utc=None if expires is None else iso_of(expires),
            last_error=self.last_error,
            halted_reason=self.halted_reason,
            ticks=self.ticks,
            orders_sent=self.orders_sent,
            orders_refused=self.orders_refused,
            updated_utc=iso_ms(time.time()),
            strategy=self.spec.strategy,
            interval_s=self.spec.interval_s,
            # each tick starts this long after its grid point (ticker.wake_offset), on purpose
            tick_offset_ms=round(ticker.offset_s * 1000) if ticker else None,
            consecutive_failures=self.failures,
            consecutive_order_failures=self.order_failures,
            uncertain_orders=sorted(self.reconciler.uncertain),
            open_on_server=self.reconciler.open_on_server,
            blocked_by=None if self.blocked is None else self.blocked[1],
            throttled_until_utc=iso_ms(self.throttled_until),
            stop_reason=self.stop.reason,
            journal_rebuilt=self.journal.rebuilt.line() if self.journal.rebuilt else None,
            **self._money_status(),
        )
        status.update(self.pricing.status())  # positions, nav, unrealized_pl, realized_pl_today
        return status

    def _money_status(self) -> WorkerStatus:
        """The pause and the money limits' figures, for status.json."""
        money: Money = self.money.last
        pause = self.paused
        return WorkerStatus(
            paused_reason=self.paused_reason(),
            paused_since_utc=None if pause is None else iso_ms(pause.since),
            paused_until_utc=None if pause is None else iso_ms(pause.until),
            day_pnl=round(money.day_pnl, 2),
            equity=None if money.equity is None else round(money.equity, 2),
            drawdown=round(money.drawdown, 2),
        )

    @property
    def status_failing(self) -> bool:
        """Whether the last status write failed (logged once)."""
        return self.status_file.failing

    def write_status(self, *, force: bool = False) -> None:
        """Write status.json when due (see :mod:`multirun.account.status_file`), or now with
        ``force``. Best-effort: a failure is logged once (again only after a success)."""
        self.status_file.write(self.status, force=force)
        reason = self.halted_reason if self.state == State.HALTED else self.paused_reason()
        if (self.state, reason) != self.told:
            self.told = (self.state, reason)
            self.on_condition(*self.told)

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self.busy = True
        try:
            if self.stop.reason == ORPHANED:  # SIGHUP came just before: do not start work
                raise Orphaned()
            yield
        finally:
            self.busy = False
