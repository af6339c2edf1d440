"""What a worker asks the server from its start to RUNNING and its first ownership check
(issue 27: 500 workers starting at once share two cores with the simulator, so each
request of a start costs the fleet 500): counted by the in-process simulator, the real
``run_account`` in this thread. The ownership check takes the listings the start-up
reconciliation read instead of reading them again, and still tells what was there at
start from what appeared after."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from multirun.account import ownership
from multirun.account.journal.store import Journal
from multirun.account.process import run_account
from multirun.config.specs import RunnerSpec
from multirun.core.statedir import StateDir
from multirun.core.statefiles import read_worker_status
from multirun.core.states import State
from multirun.sim import SimServer
from tests.account.test_worker import NAME, PREFIX, account
from tests.conftest import SimCaller, wait_until

# Until the supervisor hears RUNNING (``on_up``): the session, the start-up reconciliation's
# two listings, the NAV sample before the first tick, the instrument checked.
UNTIL_RUNNING = Counter(
    {"session": 1, "pending_trades": 1, "opened_trades": 1, "balance": 1, "realtime_price": 1}
)
# Then the ownership check's first read: the day's history alone (the listings are the
# reconciliation's).
FIRST_CHECK = Counter({"strategy_trade": 1})

PENDING_AT = 20_000.0  # a BUY limit this far below the pinned 30 000 stays pending


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: SimServer) -> RunnerSpec:
    """Account ``alpha`` on ``sim``: one tick a day (none comes during a test), its
    heartbeat each second (a 10 s watchdog) and the ownership check at each heartbeat."""
    monkeypatch.setenv(ownership.RUNTIME_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv(ownership.EPOCH_CHECK_ENV, "0.1")
    spec = account(interval_s=86_400, on_stop="keep")
    sim.set_price("BTCUSD", 30_000.0)
    return RunnerSpec(
        path=tmp_path / "runner.yaml", server=sim.base_url, state_dir=tmp_path / "state",
        accounts=(spec,), watchdog_timeout_s=10,
    )  # fmt: skip


def requests_made(sim: SimServer) -> Counter[str]:
    return Counter(sim.stats()["requests"])


@pytest.fixture
def quiet_sigterm() -> Iterator[None]:
    """A SIGTERM that comes after ``run_account`` restored the handlers does nothing."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Run:
    """``run_account`` of ``alpha`` in this thread until ``then`` (in a helper thread, once
    the worker's first ownership check has read the server) returns: then a graceful
    stop. What the server was asked: :attr:`at_running`, :attr:`at_check` (both counted
    from the start)."""

    def __init__(self, sim: SimServer, runner: RunnerSpec, then: Callable[[], None]) -> None:
        self.sim = sim
        self.before = requests_made(sim)
        self.at_running: Counter[str] = Counter()
        self.at_check: Counter[str] = Counter()
        self.failed: list[BaseException] = []
        self.done = threading.Event()  # run_account returned: no signal for it any more
        helper = threading.Thread(target=self._watch, args=(then,), daemon=True)
        helper.start()
        try:
            self.code = run_account(runner, NAME, on_up=self._up)
        finally:
            self.done.set()
            helper.join(10)  # while quiet_sigterm still holds SIGTERM
        if self.failed:
            raise self.failed[0]

    def _since_start(self) -> Counter[str]:
        return requests_made(self.sim) - self.before

    def _up(self) -> None:
        self.at_running = self._since_start()

    def _watch(self, then: Callable[[], None]) -> None:
        try:
            wait_until(
                lambda: self.done.is_set() or self._since_start()["strategy_trade"], timeout=10
            )
            if not self.done.is_set():
                self.at_check = self._since_start()
                then()
        except BaseException as exc:  # raised again in the test's thread
            self.failed.append(exc)
        finally:
            if not self.done.is_set():
                os.kill(os.getpid(), signal.SIGTERM)  # a graceful stop


def status(runner: RunnerSpec) -> dict[str, object]:
    return dict(read_worker_status(StateDir(runner.state_dir).account(NAME)))


def test_a_worker_asks_six_things_from_its_start_to_its_first_ownership_check(
    sim: SimServer, runner: RunnerSpec, quiet_sigterm: None
) -> None:
    run = Run(sim, runner, then=lambda: None)
    assert run.code == 0
    assert run.at_running == UNTIL_RUNNING
    assert run.at_check == UNTIL_RUNNING + FIRST_CHECK  # the listings were not read again


def test_trades_of_another_epoch_there_at_start_are_adopted_and_later_ones_halt_it(
    sim: SimServer, runner: RunnerSpec, quiet_sigterm: None
) -> None:
    """The check's view of the start is what the reconciliation listed: a pending order
    and a trade of ours under another journal's epoch (a reset state directory's) are
    adopted, not reported; an order of another epoch placed after the start halts it."""
    other = SimCaller(sim).login()
    old_pending = f"{PREFIX}QQQQQQ-1"
    other.open(ordertype="LMT", price=PENDING_AT, orderRef=old_pending)
    other.wait_open(other.open(orderRef=f"{PREFIX}QQQQQQ-2"))
    late = f"{PREFIX}ZZZZZZ-1"
    seen: dict[str, dict[str, object]] = {}

    def another_trader_orders() -> None:
        seen["at_check"] = status(runner)
        other.open(ordertype="LMT", price=PENDING_AT, orderRef=late)
        seen["after"] = wait_until(
            lambda: (s := status(runner))["state"] == State.HALTED and s, timeout=10
        )

    run = Run(sim, runner, then=another_trader_orders)
    assert run.at_check == UNTIL_RUNNING + FIRST_CHECK
    assert seen["at_check"]["state"] == State.RUNNING  # what was there at start: adopted
    reason = str(seen["after"]["halted_reason"])
    assert f"trade {late} carries our orderRef prefix under epoch ZZZZZZ" in reason
    assert "QQQQQQ" not in reason
    journal = Journal.for_account(StateDir(runner.state_dir).account(NAME), PREFIX)
    try:
        assert {row.order_ref for row in journal.held()} >= {old_pending, f"{PREFIX}QQQQQQ-2"}
    finally:
        journal.close()
