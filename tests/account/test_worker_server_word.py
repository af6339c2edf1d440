"""The server's word on pacing and permissions (issue 23, case 13): a 403 ends the worker
at once, a Retry-After is honoured, token refusals at start-up are retried."""

from __future__ import annotations

import time
from typing import Any

import pytest

from multirun.account.ticker import Tick
from multirun.account.worker import Forbidden, Worker
from multirun.core.clock import iso_ms
from multirun.core.states import State
from tests.clocks import ManualClock

ONLY_OTHER = {"users": [{"user": "alice", "api_key": "alice-key",
                         "accounts": {"livetest": ["OTHER"]}}]}  # fmt: skip


def tick(worker: Worker) -> None:
    now = time.time()
    worker.tick(Tick(now, now, worker.ticks + 1))


def test_a_403_in_a_tick_ends_the_worker_at_once_with_the_servers_reason(harness_of) -> None:
    harness = harness_of(accounts=ONLY_OTHER)
    worker = harness.worker(lambda ctx: "BUY")
    with pytest.raises(Forbidden) as raised:
        tick(worker)  # not a failed tick to retry: the ticker must not swallow it
    assert raised.value.error.status == 403
    assert worker.state == State.STOPPED and worker.failures == 0
    assert "account ACC-1 is not available in livetest" in (worker.last_error or "")
    assert worker.status()["last_error"] == worker.last_error
    assert harness.sim.ledger() == []


def clock_tick(worker: Worker, clock: ManualClock) -> None:
    worker.tick(Tick(clock.time(), clock.time(), worker.ticks + 1))


def test_ticks_send_nothing_while_the_servers_retry_after_holds(harness_of) -> None:
    harness = harness_of(faults={"rate_limit_rate": 1.0, "retry_after_s": 3600})
    clock = ManualClock(start=time.time())
    worker = harness.worker(lambda ctx: "BUY", clock=clock)
    clock_tick(worker, clock)  # told: 429, Retry-After 3600
    asked = sum(harness.sim.stats()["requests"].values())
    assert "Retry-After 3600 s" in (worker.last_error or "")
    assert worker.status()["throttled_until_utc"] == iso_ms(clock.time() + 3600)
    for _ in range(5):  # an hour of 1 s ticks would each have asked again
        clock.advance(1.0)
        clock_tick(worker, clock)
    assert sum(harness.sim.stats()["requests"].values()) == asked
    harness.sim.set_faults(rate_limit_rate=0.0)
    clock.advance(3600.0)
    clock_tick(worker, clock)  # the pause is over: asking again, and trading
    assert worker.status()["throttled_until_utc"] is None and worker.failures == 0
    assert len(harness.sim.ledger()) == 1


class FaultsOffAfterWaits(ManualClock):
    """A clock whose ``n``-th wait switches the simulator's faults off."""

    def __init__(self, sim: Any, n: int) -> None:
        super().__init__(start=time.time())
        self.sim, self.n = sim, n

    def wait(self, stop: Any, seconds: float) -> bool:
        if len(self.waits) + 1 == self.n:
            self.sim.set_faults(revoke_rate=0.0)
        return super().wait(stop, seconds)


def test_token_refusals_at_start_up_are_retried_with_backoff_not_an_exit(harness_of) -> None:
    # Every /opened_trades revokes the token: the client renews it once and is refused
    # again. Start-up reconciliation waits and tries again, as a tick would.
    harness = harness_of(faults={"revoke_rate": 1.0, "endpoints": ["opened_trades"]})
    clock = FaultsOffAfterWaits(harness.sim, n=2)
    worker = harness.worker(lambda ctx: None, clock=clock)
    worker._reconcile_or_stop()  # raised AuthError before (the worker exited 3)
    assert clock.waits == [1.0, 2.0]  # backoff: doubling from START_BACKOFF_S[0]
    assert worker.last_error is None and worker.state == State.RUNNING
    assert harness.sim.stats()["faults_injected"]["revoke"] >= 4
