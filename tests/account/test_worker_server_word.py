"""The server's word on pacing and permissions (issue 23, case 13): a 403 ends the worker
at once, a Retry-After is honoured, token refusals at start-up are retried."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multirun.account.ticker import Tick
from multirun.account.worker import Forbidden, Worker
from multirun.core.states import State
from tests.account.test_worker import Harness

ONLY_OTHER = {"users": [{"user": "alice", "api_key": "alice-key",
                         "accounts": {"livetest": ["OTHER"]}}]}  # fmt: skip


@pytest.fixture
def harness_of(sim_factory: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(**sim_kwargs: Any) -> Harness:
        h = Harness(sim_factory(**sim_kwargs), tmp_path / "state")
        made.append(h)
        return h

    yield make
    for h in made:
        for worker in list(h.workers):
            h.close(worker)


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
