"""One account as a process: signals, logging, building client and journal, exit code.

:func:`run_account` is the entry point of ``multirun run-account`` and of the
supervisor's forked children. It builds the account's strategy, journal (locked: one
process per account), client and stop flag, hands them to a
:class:`multirun.account.worker.Worker`, and returns the exit code of its run:

- SIGTERM/SIGINT: finish the current tick (opening nothing more), then ``on_stop``
  (close our trades and confirm, or keep them journaled), exit 0; trades that could not
  be closed by the stop deadline: exit 3, the last stderr line naming each;
- SIGHUP (the supervisor died): unwind at once, close nothing, exit within 2 s.

:func:`run_sweep` applies an account's ``on_stop`` from its journal alone, loading no
strategy code: the supervisor runs it for an account whose worker is gone.

Both first take the host-wide account lock (:mod:`multirun.account.ownership`): one process per
server account. Deterministic failures exit :data:`~multirun.core.errors.EXIT_FATAL` (78) with
one line, so the supervisor does not restart them: the strategy cannot be imported or
built, the API key is refused (401/403 from ``/session``), the server forbids the
account (a 403 from any endpoint, at start-up or in a tick: its reason in the line), the
account is traded by another process (its lock held here; or, across machines, trades
of ours this worker never sent keep appearing: HALTED). A journal or lock deleted while
running (a removed state directory) halts the worker. An unreachable server is the
normal exit (restarted with backoff), its line naming the URL and the cause (refused,
DNS, TLS, timeout).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TextIO
from urllib.parse import urlsplit

from multirun import strategies
from multirun.account import ownership
from multirun.account.alarm import DeadlinePassed, Heartbeat
from multirun.account.commands import CommandClock, CommandReader
from multirun.account.journal.store import Journal
from multirun.account.observer import NULL_OBSERVER, WorkerObserver
from multirun.account.on_stop import Closer, Outcome, StopWindow
from multirun.account.pricing import Pricing
from multirun.account.reconcile import DEFAULT_TIMING, Reconciler, Timing
from multirun.account.risk import MoneyWatch
from multirun.account.status_file import StatusFile
from multirun.account.telemetry import Telemetry
from multirun.account.ticker import StopFlag
from multirun.account.worker import ORPHANED, Client, Orphaned, StoppedReconciling, Worker
from multirun.api.models import Trade
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.clock import SYSTEM_CLOCK, Clock, iso_ms
from multirun.core.errors import (
    EXIT_API,
    EXIT_OK,
    AuthError,
    FatalError,
    MultirunError,
    NetworkError,
    RequestRejected,
    StrategyError,
    UsageError,
)
from multirun.core.statedir import AccountDir, StateDir
from multirun.core.statefiles import WorkerStatus, read_worker_status, write_worker_status
from multirun.strategies.context import StrategyContext

log = logging.getLogger("multirun.worker")

ORPHAN_EXIT_S = 1.8  # SIGHUP: hard exit after this long if unwinding is stuck (limit: 2 s)

# Starts a server for ``server: sim`` (the command that asks for one provides it) and
# yields its base URL while it runs.
ServerStarter = Callable[[], contextlib.AbstractContextManager[str]]


def run_account(
    runner: RunnerSpec,
    name: str,
    *,
    server_url: str | None = None,
    start_server: ServerStarter | None = None,
    supervised: bool = False,
    on_up: Callable[[], None] | None = None,
    on_beat: Callable[[], None] | None = None,
    on_condition: Callable[[str, str | None], None] | None = None,
    on_money: Callable[[float, float | None], None] | None = None,
    commands: int | None = None,
) -> int:
    """Run account ``name`` of ``runner`` in the foreground; returns the exit code.

    Installs SIGTERM/SIGINT (graceful: finish the tick, then on_stop) and SIGHUP
    (orphaned: stop within 2 s, close nothing) handlers; main thread only.
    ``server_url`` overrides ``runner.server``; with ``server: sim`` and no
    ``server_url``, ``start_server`` starts one for this run (standalone demos).
    ``supervised``: the supervisor stamps each line with the time and the account.
    ``on_up``: called once the account is reconciled and its ticks scheduled;
    ``on_beat``: at each heartbeat (the worker is alive: systemd's watchdog);
    ``on_condition``: at each change of its state or halted reason (the supervisor's pipe);
    ``on_money``: once a tick, its day's P&L and equity estimate (the supervisor's pipe).
    ``commands``: the read end of the supervisor's command pipe (pause, resume, flatten:
    :mod:`multirun.account.commands`).
    """
    _configure_logging(name, stamped=not supervised)
    try:
        spec = runner.account(name)
    except KeyError:
        known = ", ".join(a.name for a in runner.accounts) or "none"
        raise UsageError(
            f"no account named {name!r} in {runner.path} (accounts: {known})"
        ) from None
    try:
        strategy = strategies.resolve(spec.strategy, runner.config_dir)
        on_tick = strategies.build(strategy, spec.params)
    except StrategyError as exc:
        raise FatalError(f"account {name}: {exc}") from None
    with contextlib.ExitStack() as stack:
        url = server_url or _server_url(runner, stack, start_server)
        worker = _build_account(
            runner, spec, url, on_tick, stack, on_up=on_up, on_beat=on_beat,
            on_condition=on_condition, on_money=on_money, commands=commands,
        )  # fmt: skip
        stack.enter_context(_signals(worker))
        code = _run(worker, name, url)
    if worker.left_open is not None:  # the last line, once everything is closed
        print(worker.left_open.error_line(name), file=sys.stderr, flush=True)
    return code


def _build_account(
    runner: RunnerSpec,
    spec: AccountSpec,
    url: str,
    on_tick: Callable[[StrategyContext], object],
    stack: contextlib.ExitStack,
    *,
    on_up: Callable[[], None] | None,
    on_beat: Callable[[], None] | None = None,
    on_condition: Callable[[str, str | None], None] | None = None,
    on_money: Callable[[float, float | None], None] | None = None,
    commands: int | None = None,
) -> Worker:
    """Everything the account's worker runs on, built in dependency order (each closed
    by ``stack``): the account lock, the journal, the stop flag, the heartbeat guarding
    both, telemetry (when metrics or notifications want it), the client, the worker
    (with ``commands``: on a clock whose waits serve the supervisor's command pipe)."""
    account_lock = stack.enter_context(contextlib.closing(_lock(runner, spec, url)))
    account = StateDir(runner.state_dir).account(spec.name)
    binding = identity(runner, spec)
    fresh = not account.journal.exists()  # a new journal records its binding in its first commit
    journal = Journal.for_account(
        account, spec.order_ref_prefix, identity=binding if fresh else None
    )
    stack.callback(journal.close)
    if not fresh:
        refuse_other_binding(journal, binding, spec.name)
        journal.record_identity(binding)
    stop = StopFlag()
    stack.callback(stop.close)
    window = StopWindow(stop)
    loss = ownership.AccountLoss(journal.refuse)  # the worker halts at its next heartbeat
    heartbeat = ownership.OwnershipGuard(
        Heartbeat(account.heartbeat, on_beat), [journal.lost, account_lock.lost], loss
    )
    telemetry = None
    if runner.metrics is not None:  # for /metrics (the notifier reads status.json)
        telemetry = Telemetry(account)
        telemetry.write()
    client = _make_client(
        url, spec, window, heartbeat, on_request=telemetry.request if telemetry else None
    )
    stack.callback(client.close)
    foreign = ownership.ForeignTrades(loss, prefix=spec.order_ref_prefix, epoch=journal.epoch)
    # its first check takes the listings the start-up reconciliation read (one read each)
    epochs = ownership.EpochWatch(client, foreign)
    clock = None if commands is None else CommandClock(CommandReader(commands))
    if clock is not None:
        stack.callback(clock.reader.close)
    worker = build_worker(
        runner, spec, client, journal, on_tick, stop=stop, window=window,
        heartbeat=heartbeat, observer=telemetry or NULL_OBSERVER,
        on_up=functools.partial(_up, client, spec, on_up),
        on_foreign=foreign.adopted, account_lost=loss.why,
        check_ownership=epochs, on_start_listing=epochs.listed_at_start,
        on_condition=on_condition, on_money=on_money, clock=clock or SYSTEM_CLOCK,
    )  # fmt: skip
    if clock is not None:
        clock.actor = worker  # commands act on it from now on, between its ticks
    return worker


def build_worker(
    runner: RunnerSpec,
    spec: AccountSpec,
    client: Client,
    journal: Journal,
    on_tick: Callable[[StrategyContext], object],
    *,
    stop: StopFlag,
    timing: Timing = DEFAULT_TIMING,
    clock: Clock = SYSTEM_CLOCK,
    window: StopWindow | None = None,
    heartbeat: Callable[[], None] | None = None,
    observer: WorkerObserver = NULL_OBSERVER,
    on_up: Callable[[], None] | None = None,
    on_foreign: Callable[[str], None] = lambda order_ref: None,
    account_lost: Callable[[], str | None] = lambda: None,
    check_ownership: Callable[[], None] = lambda: None,
    on_start_listing: Callable[[list[Trade]], None] = lambda trades: None,
    on_condition: Callable[[str, str | None], None] | None = None,
    on_money: Callable[[float, float | None], None] | None = None,
) -> Worker:
    """The worker of ``spec`` over ``client`` and ``journal``, with what it is made of:
    its money limits (told each close's P&L by pricing); its pricing, told by the
    reconciler what it lists and closes; the reconciler, which
    tells ``on_foreign`` of trades of ours it never held appearing once ticking, and
    ``on_start_listing`` what its start-up reconciliation listed last (the ownership
    check's start: :meth:`ownership.EpochWatch.listed_at_start`); the
    status file. The client shares this user's session tokens (before its first call)."""
    client.share_tokens(runner.state_dir)
    started = time.time()
    money = MoneyWatch(spec.risk, runner.day_starts, journal.realized_since, started)
    pricing = Pricing(client, journal, on_realized=money.realized)
    reconciler = Reconciler(
        client, journal, stop=stop, timing=timing, started=started,
        on_listed=pricing.listed, on_closed=pricing.closed, on_foreign=on_foreign,
        on_start_listing=on_start_listing,
    )  # fmt: skip
    status_file = StatusFile(StateDir(runner.state_dir).account(spec.name), spec.interval_s)
    return Worker(
        runner, spec, client, journal, on_tick, reconciler=reconciler, pricing=pricing,
        money=money, status_file=status_file, stop=stop, started=started, clock=clock,
        timing=timing, window=window, heartbeat=heartbeat, observer=observer, on_up=on_up,
        account_lost=account_lost, check_ownership=check_ownership,
        on_condition=on_condition or (lambda state, reason: None),
        on_money=on_money or (lambda day_pnl, equity: None),
    )  # fmt: skip


def run_sweep(
    runner: RunnerSpec,
    name: str,
    *,
    server_url: str,
    deadline_s: float,
    lock: Callable[[], ownership.AccountLock | None] | None = None,
) -> int:
    """Apply account ``name``'s on_stop from its journal, loading no strategy code.

    Takes the account lock (``lock()`` instead when given: None there means closing beside
    another account of this config on the same server account, see :mod:`multirun.ops.close`)
    and the journal's, reconciles it with the server, then closes and cancels every trade
    of ours (``on_stop: close``), retrying until ``deadline_s`` seconds from now; ``keep``
    leaves them. Each close is priced from the server's history and ``status.json`` then
    shows what is left. Exit 0 when nothing of ours is left open (or keep), else 3 with a
    last stderr line ``multirun: error: <account>: N trade(s) left open: ...``.
    SIGTERM/SIGINT end it early (with that line); SIGHUP is ignored: it is bounded.
    """
    _configure_logging(name, stamped=False)
    began = time.monotonic()
    spec = runner.account(name)
    account = StateDir(runner.state_dir).account(name)
    outcome = Outcome()
    with contextlib.ExitStack() as stack:
        account_lock = lock() if lock is not None else _lock(runner, spec, server_url)
        if account_lock is not None:
            stack.callback(account_lock.close)
        journal = Journal.for_account(account, spec.order_ref_prefix)
        stack.callback(journal.close)  # closed first: the account lock last
        refuse_other_binding(journal, identity(runner, spec), name)
        try:
            held = len(journal.held()) + len(journal.intents())
            if spec.on_stop == "keep":
                log.info(
                    "sweep: on_stop keep: leaving %d trade(s) of ours open and journaled", held
                )
                return EXIT_OK
            log.info(
                "sweep: on_stop close for %d journaled trade(s), within %.0f s", held, deadline_s
            )
            outcome = _sweep_close(runner, spec, journal, server_url, began + deadline_s)
        except (MultirunError, DeadlinePassed) as exc:
            outcome.last_error = f"{type(exc).__name__}: {exc}"
            outcome.left = outcome.left or closer_left(journal)
    if outcome.unjournaled:
        log.error("%s", outcome.unjournaled_line(name))
    if outcome.ok:
        return EXIT_OK
    print(outcome.error_line(name), file=sys.stderr, flush=True)
    return EXIT_API


def _sweep_close(
    runner: RunnerSpec, spec: AccountSpec, journal: Journal, url: str, deadline: float
) -> Outcome:
    """A sweep's on_stop close until ``deadline`` (monotonic); its closes priced (the
    server's history), then the account's status.json rewritten with what is left."""
    account = StateDir(runner.state_dir).account(spec.name)
    heartbeat = Heartbeat(account.heartbeat)
    stop = StopFlag()
    window = StopWindow(stop)
    window.deadline = deadline
    client = _make_client(url, spec, window, heartbeat)
    try:
        client.share_tokens(runner.state_dir)  # one token per user: not revoke the others'
        pricing = Pricing(client, journal)
        reconciler = Reconciler(
            client, journal, stop=window, timing=DEFAULT_TIMING, started=time.time(),
            on_listed=pricing.listed, on_closed=pricing.closed,
        )  # fmt: skip
        reconciler.close_send_windows()  # their senders are gone: settle them
        closer = Closer(client, journal, reconciler, window, heartbeat=heartbeat,
                        on_closed=pricing.closed)  # fmt: skip
        with _sweep_signals():
            began = time.monotonic()
            outcome = closer.run(began + (deadline - began) * 0.9, deadline)
            _price_closes(pricing, deadline)
    finally:
        client.close()
        stop.close()
    refresh_status(account, pricing.status(), len(journal.held()))
    return outcome


PRICE_RETRY_S = 0.5  # a close the history does not list yet is looked up again this soon


def _price_closes(pricing: Pricing, deadline: float) -> None:
    """The sweep's closes priced from the server's history (as the worker does over its
    next ticks: a sweep has none), within ``deadline``."""
    pricing.price()
    while pricing.pending and time.monotonic() + PRICE_RETRY_S < deadline:
        time.sleep(PRICE_RETRY_S)
        pricing.price()


def refresh_status(account: AccountDir, priced: WorkerStatus, open_trades: int) -> None:
    """After a sweep: the account's status.json shows what its journal holds now (its
    positions, open trades and realized P&L today), the rest as its worker left it."""
    status = read_worker_status(account)
    status["positions"] = priced.get("positions", [])
    status["open_trades"] = open_trades
    status["realized_pl_today"] = priced.get("realized_pl_today", 0.0)
    status["updated_utc"] = iso_ms(time.time())
    if not status["positions"]:
        status["unrealized_pl"] = None
    try:
        write_worker_status(account, status)
    except OSError as exc:
        log.warning(
            "cannot write %s (%s): status shows the worker's last view", account.status, exc
        )


def identity(runner: RunnerSpec, spec: AccountSpec) -> dict[str, str]:
    """The server account an account of ``runner`` trades, as its journal records it."""
    return ownership.binding(runner, spec)


def refuse_other_binding(journal: Journal, binding: dict[str, str], name: str) -> None:
    """Raise :class:`FatalError` naming the trades when ``journal`` holds trades opened
    under another server account than ``binding`` (its accountid, user, runmode or server
    edited): that account's listings would "settle" them while the server keeps them
    open on the old one. A journal holding nothing takes the new binding."""
    recorded = journal.identity()
    if recorded is None or ownership.same_binding(recorded, binding):
        return
    if not (journal.held() or journal.intents()):
        return
    trades = ownership.held_trades(journal.path, name)
    edits = ", ".join(
        f"{key} {recorded.get(key)} -> {binding.get(key)}"
        for key in ("server", "user", "runmode", "accountid")
        if recorded.get(key) != binding.get(key)
    )
    raise FatalError(
        f"account {name}: its journal holds {len(trades)} trade(s) opened on another server "
        f"account than the config names now ({edits}): {'; '.join(trades)}; refusing to "
        "start (the new account's listings cannot settle them): put the old value back and "
        "close them (multirun close, or on_stop: close and stop) before changing it"
    )


def _lock(runner: RunnerSpec, spec: AccountSpec, url: str) -> ownership.AccountLock:
    return ownership.lock_account(
        url, spec.user, spec.runmode, spec.accountid, config=runner.path, name=spec.name
    )


def _run(worker: Worker, name: str, url: str) -> int:
    """``worker.run()``; a refused key is fatal, an unreachable server names its cause."""
    try:
        return worker.run()
    except AuthError as exc:
        if exc.status == 403:  # forbidden (an account not available): no retry changes that
            raise FatalError(f"account {name}: refused by {_safe(url)}: {exc}") from None
        if exc.endpoint != "session":
            raise
        raise FatalError(f"account {name}: API key refused by {_safe(url)}: {exc}") from None
    except NetworkError as exc:
        raise NetworkError(
            f"account {name}: cannot reach {_safe(url)}: {diagnose(url)} ({exc})",
            endpoint=exc.endpoint,
        ) from None


def _up(client: Client, spec: AccountSpec, on_up: Callable[[], None] | None) -> None:
    """Once reconciled, before the first tick: the instrument checked, then ``on_up``."""
    check_instrument(client, spec)
    if on_up is not None:
        on_up()


def check_instrument(client: Client, spec: AccountSpec) -> None:
    """Before the first order: the server quotes ``spec.instrument``; one it refuses is
    :class:`FatalError` (each order would be refused, every tick, until HALTED). A server
    that does not answer now is the worker's to find out (it reconciles, retrying)."""
    try:
        quoted = spec.instrument in client.realtime_price(spec.instrument)
        why = "not in its quote reply"
    except RequestRejected as exc:
        quoted, why = False, str(exc)
    except MultirunError:
        return
    if not quoted:
        raise FatalError(
            f"account {spec.name}: instrument {spec.instrument} is refused by the server "
            f"({why}): fix `instrument` in the config, then `multirun reload` (`multirun "
            "validate --online` checks it first)"
        )


def diagnose(url: str, timeout_s: float = 3.0) -> str:
    """Why ``url``'s server cannot be reached now: DNS, refused, timeout or TLS."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"DNS: cannot resolve {host} ({exc.strerror})"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if parts.scheme == "https":
                context = ssl.create_default_context()
                with context.wrap_socket(sock, server_hostname=host):
                    pass
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}"
    except TimeoutError:
        return f"connect to {host}:{port} timed out"
    except ssl.SSLError as exc:
        return f"TLS: {exc.reason or exc}"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    return "connects now; the request itself failed"


def _safe(url: str) -> str:
    """``url`` without any user:password part."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def closer_left(journal: Journal) -> list[str]:
    """What the journal holds, named as a stop names what it left (when it can be read)."""
    with contextlib.suppress(MultirunError):
        held = [
            f"trade {r.trade_id or '?'} {r.side} {r.volume:g} {r.instrument} ({r.order_ref})"
            for r in [*journal.held(), *journal.intents()]
        ]
        return held
    return ["the journal could not be read"]


@contextlib.contextmanager
def _sweep_signals() -> Iterator[None]:
    """SIGTERM/SIGINT: end the sweep now (it reports what is left); SIGHUP: ignored."""

    def now(signum: int, frame: FrameType | None) -> None:
        raise DeadlinePassed(f"sweep ({signal.Signals(signum).name})", 0, [])

    handlers: dict[signal.Signals, Callable[[int, FrameType | None], None] | signal.Handlers] = {
        signal.SIGTERM: now, signal.SIGINT: now, signal.SIGHUP: signal.SIG_IGN,
    }  # fmt: skip
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _server_url(
    runner: RunnerSpec, stack: contextlib.ExitStack, start_server: ServerStarter | None
) -> str:
    if not runner.uses_sim:
        return runner.server
    if start_server is None:
        raise UsageError(f"{runner.path}: server: sim, but no simulator to connect to")
    url = stack.enter_context(start_server())
    log.info("server: sim: started an in-process simulator at %s", url)
    return url


def _make_client(
    url: str,
    spec: AccountSpec,
    interrupt: StopWindow,
    heartbeat: Callable[[], None],
    *,
    on_request: Callable[[str, str], None] | None = None,
) -> Client:
    from multirun.api.client import AlgogeneClient  # requests: imported by workers only

    return AlgogeneClient(
        url,
        spec.user,
        spec.api_key,
        spec.runmode,
        spec.accountid,
        reconcile_window_s=DEFAULT_TIMING.reconcile_window_s,
        interrupt=interrupt,
        heartbeat=heartbeat,
        on_request=on_request,
    )


@contextlib.contextmanager
def _signals(worker: Worker) -> Iterator[None]:
    """SIGTERM/SIGINT: stop after the current tick. SIGHUP: orphaned, unwind now."""

    def graceful(signum: int, frame: FrameType | None) -> None:
        if not worker.stop.is_set():
            log.info("%s: stopping after the current tick", signal.Signals(signum).name)
        worker.stop.set(signal.Signals(signum).name)
        if worker.reconciling and (worker.nothing_journaled or worker.spec.on_stop == "keep"):
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


# The log level of workers (`--log-level` of start and run-account sets it; forked
# children inherit it): DEBUG shows the strategies' ``ctx.log.debug`` lines.
LOG_LEVEL_ENV = "MULTIRUN_LOG_LEVEL"
# Starts each traceback line a worker writes: the supervisor sends such lines to the
# account's worker.log only, the terminal keeps the one-line error (see multirun.supervisor.output).
TRACE_MARK = "trace| "


class _TraceFormatter(logging.Formatter):
    """The message on one line; a traceback (``exc_info``) follows as marked lines."""

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info = exc_info
        if not exc_info:
            return line
        trace = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        return "\n".join([line, *(TRACE_MARK + part for part in trace.splitlines())])


def log_level() -> int:
    """The workers' level: ``MULTIRUN_LOG_LEVEL`` (debug, info, warning, error), else INFO."""
    name = os.environ.get(LOG_LEVEL_ENV, "").strip().upper()
    level = logging.getLevelName(name) if name else logging.INFO
    return level if isinstance(level, int) else logging.INFO


def _configure_logging(name: str, *, stamped: bool = True) -> None:
    """One line per event on stderr, unless the host set up logging; ``stamped``: with
    the UTC time and the account's name (a standalone worker's lines have no other).
    A traceback follows its line as :data:`TRACE_MARK` lines."""
    root = logging.getLogger()
    if root.handlers:
        return
    root.addHandler(log_handler(sys.stderr, name, stamped=stamped))
    root.setLevel(log_level())


def log_handler(stream: TextIO, name: str, *, stamped: bool) -> logging.Handler:
    """A worker's log lines on ``stream`` (see :func:`_configure_logging`)."""
    handler = logging.StreamHandler(stream)
    stamp = f"%(asctime)s.%(msecs)03dZ %(levelname)s [{name}] " if stamped else "%(levelname)s "
    formatter = _TraceFormatter(stamp + "%(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    return handler
