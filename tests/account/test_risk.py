"""Money limits inside one account, on the simulator, the ledger as judge: pause, resume
and flatten (journaled: a new worker on the journal starts paused), and a losing account
breaching its own max_daily_loss (pause or flatten)."""

from __future__ import annotations

from typing import Any

import pytest

from multirun.account.worker import Worker
from multirun.core.states import State
from tests.account.test_worker import PREFIX, Harness, Script, open_ours, tick
from tests.conftest import SimCaller

BTC = 30000.0  # where each test pins BTCUSD first
MOVE = 100.0  # the price's fall per tick in a losing run (volume 1: 100 USD per tick)


def ours(harness: Harness) -> list[dict[str, Any]]:
    """Our orders as the simulator's ledger records them, in the order received."""
    return [o for o in harness.sim.ledger() if str(o["orderRef"]).startswith(PREFIX)]


def told(worker: Worker) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []
    worker.on_condition = lambda state, reason: seen.append((state, reason))
    return seen


def test_pause_stops_opens_not_closes_and_a_new_worker_starts_paused(
    harness: Harness, alice: SimCaller
) -> None:
    worker = harness.worker(Script("BUY", "SELL", "SELL", "BUY"))
    conditions = told(worker)
    worker.reconcile()
    tick(worker)
    assert len(ours(harness)) == 1
    worker.pause("paused by operator")
    assert worker.state == State.PAUSED and conditions == [(State.PAUSED, "paused by operator")]
    assert worker.status()["paused_reason"] == "paused by operator"
    tick(worker)  # SELL while long: the close acts, the open does not
    assert open_ours(alice) == {} and len(ours(harness)) == 1
    assert worker.failures == 0 and worker.last_error is None
    harness.close(worker)  # as a SIGKILL would: no on_stop
    again = harness.worker(Script("BUY", "BUY"))
    assert again.state == State.PAUSED and again.paused_reason() == "paused by operator"
    again.reconcile()
    tick(again)
    assert len(ours(harness)) == 1  # still nothing opened
    again.resume()
    assert again.state == State.RUNNING and again.journal.pause() is None
    tick(again)
    assert len(ours(harness)) == 2 and len(open_ours(alice)) == 1


def test_flatten_closes_everything_once_then_pauses(harness: Harness, alice: SimCaller) -> None:
    for n in (77, 78):  # ours, from a lost journal: adopted
        alice.wait_open(alice.open(buysell="BUY", orderRef=f"{PREFIX}{n}"))
    worker = harness.worker(Script("BUY", "BUY", "SELL"))
    worker.reconcile()
    tick(worker)  # long already: nothing sent
    assert len(open_ours(alice)) == 2
    closes = harness.sim.stats()["requests"].get("close_orders", 0)
    worker.flatten("flattened by operator")
    assert open_ours(alice) == {} and worker.journal.held() == []
    assert harness.sim.stats()["requests"].get("close_orders", 0) == closes + 1  # one request
    assert {o["status"] for o in ours(harness)} == {"CLOSED"}
    assert worker.state == State.PAUSED and worker.paused is not None
    assert not worker.paused.flatten  # done: a restart has nothing left to close
    tick(worker)
    tick(worker)
    assert len(ours(harness)) == 2 and open_ours(alice) == {}


@pytest.fixture
def alice(sim: Any) -> SimCaller:
    return SimCaller(sim, user="alice", api_key="alice-key", accountid="ACC-1").login()


@pytest.fixture
def harness(sim: Any, tmp_path: Any) -> Any:
    h = Harness(sim, tmp_path / "state")
    yield h
    for worker in list(h.workers):
        h.close(worker)
