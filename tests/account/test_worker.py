"""The worker against the simulator, in-process: execution, reconcile, stop, guardrails."""

from __future__ import annotations

import json
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from multirun import strategies
from multirun.account.journal.store import ABANDONED, CLOSED, OPEN, Journal
from multirun.account.orders_plan import OrderPlan, plan_orders
from multirun.account.process import build_worker
from multirun.account.reconcile import Timing
from multirun.account.ticker import StopFlag, Tick
from multirun.account.worker import Worker
from multirun.api.client import AlgogeneClient
from multirun.config.specs import AccountSpec, Guardrails, RunnerSpec, freeze
from multirun.core.clock import SYSTEM_CLOCK, iso_ms
from multirun.core.errors import CloseUnconfirmed, JournalError
from multirun.core.redact import Secret
from multirun.core.statedir import StateDir
from multirun.core.states import State
from multirun.sim import SimServer
from multirun.strategies import Signal
from multirun.strategies.context import Decision, OpenTrade, StrategyContext
from tests.account.journal.test_store import BrokenDisk
from tests.clocks import ManualClock
from tests.conftest import SimCaller, wait_until

NAME = "alpha"
PREFIX = f"mr-{NAME}-"


def account(**overrides: Any) -> AccountSpec:
    values: dict[str, Any] = {
        "name": NAME,
        "user": "alice",
        "api_key": Secret("alice-key"),
        "accountid": "ACC-1",
        "runmode": "livetest",
        "strategy": "random",
        "instrument": "BTCUSD",
        "volume": 1.0,
        "interval_s": 1,
        "params": freeze({"seed": 1}),
    }
    values.update(overrides)
    return AccountSpec(**values)


class Script:
    """A strategy returning queued decisions (None once the queue is empty)."""

    def __init__(self, *decisions: object) -> None:
        self.decisions = list(decisions)
        self.contexts: list[StrategyContext] = []

    def __call__(self, ctx: StrategyContext) -> object:
        self.contexts.append(ctx)
        item = self.decisions.pop(0) if self.decisions else None
        if isinstance(item, BaseException):
            raise item
        return item


class Harness:
    """A Worker on the ``sim`` with its journal and client, ticked by hand."""

    def __init__(self, sim: SimServer, state_dir: Path) -> None:
        self.sim = sim
        self.state_dir = state_dir
        self.workers: list[Worker] = []

    def worker(
        self,
        strategy: Callable[[StrategyContext], object],
        *,
        window: float = 0.5,
        late: float = 60.0,
        clock: ManualClock | None = None,
        **overrides: Any,
    ) -> Worker:
        spec = account(**overrides)
        runner = RunnerSpec(
            path=self.state_dir / "runner.yaml",
            server=self.sim.base_url,
            state_dir=self.state_dir,
            accounts=(spec,),
        )
        client = AlgogeneClient(
            self.sim.base_url, spec.user, spec.api_key, spec.runmode, spec.accountid,
            reconcile_window_s=window,
        )  # fmt: skip
        journal = Journal.for_account(
            StateDir(self.state_dir).account(spec.name), spec.order_ref_prefix
        )
        worker = build_worker(
            runner, spec, client, journal, strategy, stop=StopFlag(),
            timing=Timing(reconcile_window_s=window, late_window_s=late),
            clock=clock or SYSTEM_CLOCK,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def close(self, worker: Worker) -> None:
        """Let go of a worker as a crash would (no on_stop)."""
        worker.journal.close()
        worker.client.close()
        worker.stop.close()
        self.workers.remove(worker)


@pytest.fixture
def harness(sim: SimServer, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(sim, tmp_path / "state")
    yield h
    for worker in list(h.workers):
        h.close(worker)


@pytest.fixture
def alice(sim: SimServer) -> SimCaller:
    return SimCaller(sim, user="alice", api_key="alice-key", accountid="ACC-1").login()


def tick(worker: Worker) -> None:
    now = time.time()
    worker.tick(Tick(now, now, worker.ticks + 1))


def open_ours(alice: SimCaller) -> dict[str, dict[str, Any]]:
    """Our trades open on the server, by orderRef."""
    return {t["order_Ref"]: t for t in alice.opened().values() if t["order_Ref"].startswith(PREFIX)}


def sides(alice: SimCaller) -> list[int]:
    return sorted(t["buysell"] for t in open_ours(alice).values())


# --- planning ---------------------------------------------------------------------

LONG = OpenTrade(f"{PREFIX}1", "1", "BTCUSD", "BUY", 1.0)
SHORT = OpenTrade(f"{PREFIX}2", "2", "BTCUSD", "SELL", 1.0)
OTHER = OpenTrade(f"{PREFIX}3", "3", "ETHUSD", "BUY", 1.0)


@pytest.mark.parametrize(
    ("decision", "trades", "expected"),
    [
        (Decision(None), [LONG], OrderPlan()),
        (Decision(Signal.BUY), [], OrderPlan(open_side="BUY")),
        (Decision(Signal.BUY), [LONG], OrderPlan()),
        (Decision(Signal.SELL), [LONG], OrderPlan(close=(LONG,), open_side="SELL")),
        (Decision(Signal.FLAT), [LONG, SHORT], OrderPlan(close=(LONG, SHORT))),
        (Decision(Signal.FLAT), [], OrderPlan()),
        (Decision(Signal.BUY, fresh=True), [LONG], OrderPlan(close=(LONG,), open_side="BUY")),
        (Decision(Signal.BUY), [LONG, OTHER], OrderPlan(close=(OTHER,))),
    ],
)
def test_plan_orders(decision: Decision, trades: list[OpenTrade], expected: OrderPlan) -> None:
    assert plan_orders(decision, trades, "BTCUSD") == expected


# --- execution against the simulator ---------------------------------------------------


@pytest.mark.slow
def test_signals_move_our_trades_to_the_target(harness: Harness, alice: SimCaller) -> None:
    script = Script("BUY", "BUY", None, "SELL", "FLAT", Decision(Signal.SELL, fresh=True))
    worker = harness.worker(script)
    worker.reconcile()
    expected = [[1], [1], [1], [-1], [], [-1]]
    refs_seen: list[set[str]] = []
    for want in expected:
        tick(worker)
        assert worker.failures == 0, worker.last_error
        assert sides(alice) == want
        refs_seen.append(set(open_ours(alice)))
    assert refs_seen[0] == refs_seen[1] == refs_seen[2]  # BUY while long: nothing sent
    assert refs_seen[5] and refs_seen[5] != refs_seen[3]  # fresh: closed and reopened
    ledger = [o for o in harness.sim.ledger() if o["orderRef"].startswith(PREFIX)]
    assert len(ledger) == 3 == worker.orders_sent
    assert len({o["orderRef"] for o in ledger}) == 3
    # The journal knows each of them, and what is open.
    states = {o.order_ref: o.state for o in worker.journal.all_orders()}
    assert states == {o["orderRef"]: ("OPEN" if o["status"] == "OPEN" else CLOSED) for o in ledger}


def test_the_strategy_sees_its_trades_params_and_state(harness: Harness) -> None:
    seen: list[tuple[float, Any, int]] = []

    def strategy(ctx: StrategyContext) -> str:
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        seen.append((ctx.position, ctx.params["seed"], ctx.state["n"]))
        assert ctx.price().bid > 0
        assert len(ctx.history("M", 5)) == 5
        return "BUY"

    worker = harness.worker(strategy)
    worker.reconcile()
    tick(worker)
    tick(worker)
    assert seen == [(0.0, 1, 1), (1.0, 1, 2)]
    harness.close(worker)
    restarted = harness.worker(strategy)  # state comes back from the journal
    restarted.reconcile()
    tick(restarted)
    assert seen[-1] == (1.0, 1, 3)


def test_random_runs_like_the_seed_script(harness: Harness, alice: SimCaller) -> None:
    worker = harness.worker(strategies.build(strategies.resolve("random"), {"seed": 5}))
    worker.reconcile()
    for _ in range(8):
        tick(worker)
        assert worker.failures == 0, worker.last_error
        assert len(open_ours(alice)) <= 1
    ledger = [o for o in harness.sim.ledger() if o["orderRef"].startswith(PREFIX)]
    import random

    rng = random.Random(5)
    draws = [rng.choice(["BUY", "SELL", ""]) for _ in range(8)]
    assert [("BUY" if o["buysell"] == 1 else "SELL") for o in ledger] == [d for d in draws if d]


def test_trades_without_our_prefix_are_never_touched(harness: Harness, alice: SimCaller) -> None:
    foreign = alice.open(buysell="SELL", orderRef="manual-1")
    bare = alice.open(buysell="BUY")
    other_account = alice.open(buysell="BUY", orderRef="mr-beta-1")
    for trade in (foreign, bare, other_account):
        alice.wait_open(trade)
    worker = harness.worker(Script("BUY", "FLAT", "SELL"), on_stop="close")
    worker.reconcile()
    for _ in range(3):
        tick(worker)
    worker.stop.set()
    assert worker.finish() == 0
    assert {foreign, bare, other_account} <= set(alice.opened())
    assert open_ours(alice) == {}


def test_a_longer_account_name_sharing_our_prefix_is_not_ours(
    harness: Harness, alice: SimCaller
) -> None:
    # Account "alpha-beta" orders as mr-alpha-beta-<n>, which starts with mr-alpha-.
    sibling = alice.open(buysell="SELL", orderRef=f"{PREFIX}beta-1")
    lookalike = alice.open(buysell="SELL", orderRef=f"{PREFIX}7x")
    for trade in (sibling, lookalike):
        alice.wait_open(trade)
    worker = harness.worker(Script("BUY", "FLAT"), on_stop="close")
    worker.reconcile()
    assert worker.journal.all_orders() == []  # nothing adopted
    for _ in range(2):
        tick(worker)
    worker.stop.set()
    assert worker.finish() == 0
    assert {sibling, lookalike} <= set(alice.opened())
    (ref,) = [r.order_ref for r in worker.journal.all_orders()]
    assert ref.startswith(PREFIX) and worker.journal.seq_of(ref) == 1


# --- reconciling the journal with the server ---------------------------------------------


def test_adopts_our_unknown_trades_and_never_reuses_their_refs(
    harness: Harness, alice: SimCaller
) -> None:
    stray = alice.open(buysell="SELL", orderRef=f"{PREFIX}41")
    alice.wait_open(stray)
    worker = harness.worker(Script("BUY"))
    worker.reconcile()
    row = worker.journal.get(f"{PREFIX}41")
    assert (row.state, row.trade_id, row.origin) == (OPEN, stray, "adopted")
    tick(worker)  # BUY: closes the adopted SELL, opens a new one above the seen counter
    (ref,) = set(open_ours(alice))
    assert ref != f"{PREFIX}41" and (worker.journal.seq_of(ref) or 0) > 41
    assert worker.journal.get(f"{PREFIX}41").state == CLOSED


def test_trades_closed_meanwhile_are_recorded(harness: Harness, alice: SimCaller) -> None:
    worker = harness.worker(Script("BUY"))
    worker.reconcile()
    tick(worker)
    (ref, trade), *_ = open_ours(alice).items()
    harness.close(worker)  # "crash", then someone closes the trade by hand
    alice.ok("POST", "close_orders", tradeIDs=trade["trade_ID"])
    wait_until(lambda: not open_ours(alice))
    restarted = harness.worker(Script())
    restarted.reconcile()
    assert restarted.journal.get(ref).state == CLOSED
    assert restarted.journal.held() == []


@pytest.mark.slow
def test_an_intent_found_on_the_server_is_recorded_not_resent(
    harness: Harness, alice: SimCaller
) -> None:
    worker = harness.worker(Script())
    # A crash after the order reached the server but before its ack was journaled:
    intent = worker.journal.new_intent("BTCUSD", "BUY", 1.0)
    trade = alice.open(buysell="BUY", orderRef=intent.order_ref)
    harness.close(worker)
    restarted = harness.worker(Script())
    restarted.reconcile()
    row = restarted.journal.get(intent.order_ref)
    assert (row.state, row.trade_id) == (OPEN, trade)
    assert [o["orderRef"] for o in harness.sim.ledger()].count(intent.order_ref) == 1


@pytest.mark.slow
def test_an_intent_missing_from_the_server_is_abandoned_after_the_late_window(
    harness: Harness,
) -> None:
    worker = harness.worker(Script(), window=0.3, late=0.6)
    intent = worker.journal.new_intent("BTCUSD", "SELL", 1.0)  # crashed before sending
    harness.close(worker)
    restarted = harness.worker(Script("BUY"), window=0.3, late=0.6)
    began = time.monotonic()
    restarted.reconcile()
    assert 0.25 <= time.monotonic() - began < 3
    # Within the late window it is UNCERTAIN: it blocks opens, it is never sent.
    assert restarted.journal.get(intent.order_ref).state == "INTENT"
    assert restarted.status()["uncertain_orders"] == [intent.order_ref]
    wait_until(lambda: (restarted.sync(), restarted.journal.get(intent.order_ref))[1].state
               == ABANDONED, timeout=5)  # fmt: skip
    assert restarted.status()["uncertain_orders"] == []
    tick(restarted)  # trading resumes with a new orderRef; the abandoned one is never sent
    refs = [o["orderRef"] for o in harness.sim.ledger()]
    assert intent.order_ref not in refs and len(refs) == 1


@pytest.mark.slow
def test_an_intent_stamped_by_a_clock_ahead_of_ours_is_still_settled(
    harness: Harness,
) -> None:
    # The previous process's wall clock was ahead (stepped back since, e.g. by NTP).
    ahead = ManualClock(time.time() + 600)
    path = StateDir(harness.state_dir).account(NAME).journal
    previous = Journal(path, PREFIX, clock=ahead)
    intent = previous.new_intent("BTCUSD", "BUY", 1.0)  # crashed before sending
    previous.close()
    restarted = harness.worker(Script(), window=0.3, late=0.3)
    give_up = threading.Timer(5, restarted.stop.set, args=("test: reconcile hung",))
    give_up.start()
    try:
        restarted.reconcile()
    finally:
        give_up.cancel()
    assert restarted.stop.reason is None
    wait_until(lambda: (restarted.sync(), restarted.journal.get(intent.order_ref))[1].state
               == ABANDONED, timeout=5)  # fmt: skip


# --- stopping ------------------------------------------------------------------------------


def test_stop_with_close_closes_our_trades(harness: Harness, alice: SimCaller) -> None:
    worker = harness.worker(Script("SELL"), on_stop="close")
    worker.reconcile()
    tick(worker)
    assert sides(alice) == [-1]
    worker.stop.set("SIGTERM")
    assert worker.finish() == 0
    assert open_ours(alice) == {}
    assert worker.journal.held() == []
    assert json.loads(worker.status_path.read_text())["state"] == State.STOPPED


def test_stop_with_keep_leaves_trades_open_and_journaled(
    harness: Harness, alice: SimCaller
) -> None:
    worker = harness.worker(Script("BUY"), on_stop="keep")
    worker.reconcile()
    tick(worker)
    worker.stop.set("SIGTERM")
    assert worker.finish() == 0
    assert sides(alice) == [1]
    assert [r.order_ref for r in worker.journal.held()] == list(open_ours(alice))


def test_run_ticks_on_the_grid_until_stopped(harness: Harness) -> None:
    script = Script("BUY")
    clock = ManualClock(1_700_000_000.4)  # the ticker waits on it: no real waiting
    worker = harness.worker(script, on_stop="close", clock=clock)

    def stop_after_two(ctx: StrategyContext) -> object:
        if len(script.contexts) == 1:
            worker.stop.set("test")
        return script(ctx)

    worker.on_tick = stop_after_two
    assert worker.run() == 0
    assert [c.tick_utc.microsecond for c in script.contexts] == [0, 0]
    assert script.contexts[1].tick_utc.timestamp() - script.contexts[0].tick_utc.timestamp() == 1
    assert script.contexts[0].tick_utc.timestamp() == 1_700_000_001
    assert worker.journal.held() == []


def test_the_status_written_after_a_tick_names_the_next_tick(harness: Harness) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def strategy(ctx: StrategyContext) -> None:
        # What `multirun status` reads at this moment: the file the previous tick wrote.
        seen.append((iso_ms(ctx.tick_utc.timestamp()), json.loads(worker.status_path.read_text())))
        if len(seen) == 2:
            worker.stop.set("test")

    worker = harness.worker(strategy, clock=ManualClock(1_700_000_000.4))
    assert worker.run() == 0
    (first_due, _), (second_due, after_first) = seen
    assert after_first["next_tick_utc"] == second_due
    assert after_first["last_tick_utc"] >= first_due


# --- failures, guardrails, status --------------------------------------------------------------


def test_a_strategy_exception_is_a_failed_tick_logged_on_one_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    worker = harness.worker(Script(ValueError("bad input"), "BUY"))
    worker.reconcile()
    with caplog.at_level(logging.ERROR, logger="multirun.worker"):
        tick(worker)
    assert worker.failures == 1 and worker.state == State.RUNNING
    lines = [r.getMessage() for r in caplog.records]
    assert any("ValueError: bad input" in line and "\n" not in line for line in lines)
    tick(worker)
    assert worker.failures == 0 and worker.orders_sent == 1


def test_consecutive_failures_halt_the_account(harness: Harness, alice: SimCaller) -> None:
    calls: list[int] = []

    def broken(ctx: StrategyContext) -> object:
        calls.append(1)
        raise RuntimeError("no data")

    worker = harness.worker(broken, guardrails=Guardrails(halt_after_failures=3))
    worker.reconcile()
    for _ in range(5):
        tick(worker)
    assert worker.state == State.HALTED and len(calls) == 3
    status = json.loads(worker.status_path.read_text())
    assert status["state"] == State.HALTED
    assert "3 consecutive failed ticks" in status["halted_reason"]
    assert "RuntimeError: no data" in status["halted_reason"]
    assert status["ticks"] == 5
    assert [o for o in harness.sim.ledger()] == []


def test_an_invalid_signal_is_a_failed_tick(harness: Harness) -> None:
    worker = harness.worker(Script("LONG"))
    worker.reconcile()
    tick(worker)
    assert worker.failures == 1 and "StrategyError" in (worker.last_error or "")


def test_orders_per_hour_limit_blocks_new_orders(harness: Harness, alice: SimCaller) -> None:
    fresh_buy = Decision(Signal.BUY, fresh=True)
    worker = harness.worker(
        Script(fresh_buy, fresh_buy, fresh_buy),
        guardrails=Guardrails(max_orders_per_hour=2),
    )
    worker.reconcile()
    for _ in range(3):
        tick(worker)
    assert worker.orders_sent == 2
    assert open_ours(alice) == {}  # the third tick still closed, but opened nothing
    assert "max_orders_per_hour" in (worker.last_error or "")


def test_max_open_trades_blocks_new_orders(harness: Harness, alice: SimCaller) -> None:
    worker = harness.worker(Script("BUY"), guardrails=Guardrails(max_open_trades=0))
    worker.reconcile()
    tick(worker)
    assert open_ours(alice) == {} and worker.orders_sent == 0
    assert worker.failures == 0 and "max_open_trades" in (worker.last_error or "")


def test_a_refused_order_is_abandoned_and_counted_as_a_failure(harness: Harness) -> None:
    worker = harness.worker(Script("BUY"), volume=1e9)  # far beyond the margin
    worker.reconcile()
    tick(worker)
    assert worker.failures == 1 and "OrderRejected" in (worker.last_error or "")
    (row,) = worker.journal.all_orders()
    assert row.state == ABANDONED


def test_status_file_is_private_and_complete(harness: Harness) -> None:
    worker = harness.worker(Script("BUY"))
    worker.reconcile()
    tick(worker)
    status = json.loads(worker.status_path.read_text())
    assert stat.S_IMODE(worker.status_path.stat().st_mode) == 0o600
    for key in (
        "name", "pid", "state", "started_utc", "last_tick_utc", "next_tick_utc",
        "open_trades", "token_expires_utc", "last_error", "halted_reason", "ticks",
        "orders_sent", "updated_utc",
    ):  # fmt: skip
        assert key in status
    assert status["open_trades"] == 1 and status["orders_sent"] == 1
    assert status["token_expires_utc"] is not None
    assert list(worker.status_path.parent.glob(".*tmp")) == []


def test_a_second_worker_for_the_same_account_is_refused(harness: Harness) -> None:
    harness.worker(Script())
    with pytest.raises(Exception, match="another worker"):
        harness.worker(Script())


@pytest.mark.slow
def test_server_errors_are_failed_ticks_not_crashes(harness: Harness) -> None:
    worker = harness.worker(Script("BUY", "BUY"), guardrails=Guardrails(halt_after_failures=2))
    worker.reconcile()
    harness.sim.set_faults(error_rate=1.0)
    worker.client = replace_budget(worker.client)
    tick(worker)
    assert worker.failures == 1 and "ServerError" in (worker.last_error or "")
    harness.sim.set_faults(error_rate=0.0)
    tick(worker)
    assert worker.failures == 0 and worker.orders_sent == 1


def test_a_journal_failure_on_start_is_a_journal_error_not_a_traceback(
    harness: Harness,
) -> None:
    worker = harness.worker(Script())
    worker.journal._db = BrokenDisk(worker.journal._db)  # type: ignore[assignment]
    worker.journal._forget()  # as a failed write does: reads reach the disk (issue 27's mirror)
    with pytest.raises(JournalError, match="disk I/O error"):
        worker.run()  # the CLI prints a MultirunError as one line


def replace_budget(client: AlgogeneClient) -> AlgogeneClient:
    """A client with a short read budget, so failing reads give up quickly."""
    client._read_budget_s = 0.3
    return client


_ = replace  # dataclasses.replace kept for readers extending these helpers


def test_ticks_skip_the_pending_listing_once_every_trade_of_ours_was_seen_opened(
    harness: Harness, alice: SimCaller
) -> None:
    def pending_calls() -> int:
        return int(harness.sim.stats()["requests"].get("pending_trades", 0))

    worker = harness.worker(Script("BUY"))
    before = pending_calls()
    worker.reconcile()
    assert pending_calls() > before  # start-up reconciliation always looks at both
    tick(worker)  # opens, and waits until the trade is listed as opened
    before = pending_calls()
    tick(worker)
    assert pending_calls() == before and len(worker.journal.held()) == 1
    alice.post("close_orders", tradeIDs=next(iter(open_ours(alice).values()))["trade_ID"])
    wait_until(lambda: not open_ours(alice))
    tick(worker)  # closed by hand: recorded without a pending listing
    assert worker.journal.held() == [] and worker.failures == 0


def test_on_stop_close_looks_again_after_an_unconfirmed_close(
    harness: Harness, alice: SimCaller
) -> None:
    worker = harness.worker(Script("BUY"))
    worker.reconcile()
    tick(worker)
    real_close, calls = worker.client.close_trades, []

    def unconfirmed_once(trade_ids: Any, **options: Any) -> None:
        calls.append(trade_ids)
        if len(calls) == 1:  # as when the confirming listing's reply is held too long
            raise CloseUnconfirmed("close_orders: still listed", endpoint="close_orders")
        real_close(trade_ids, **options)

    worker.client.close_trades = unconfirmed_once  # type: ignore[method-assign]
    worker.close_all()
    assert len(calls) == 2 and not open_ours(alice) and worker.journal.held() == []
