"""The simulator sleeps when idle: its engine wakes for its next event, not every tick."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from multirun.sim import SimServer
from tests.conftest import SimCaller, SimFactory, wait_until


class EngineTurns:
    """Counts the engine thread's calls of ``broker.process`` (requests' calls are not)."""

    def __init__(self, sim: SimServer) -> None:
        self.count = 0
        self.again = threading.Event()
        process = sim.broker.process

        def counted() -> None:
            if threading.current_thread().name == "sim-engine":
                self.count += 1
                self.again.set()
            process()

        sim.broker.process = counted  # type: ignore[method-assign]


@pytest.fixture
def idle_sim(sim_factory: SimFactory) -> Iterator[tuple[SimServer, EngineTurns]]:
    sim = sim_factory(tick_ms=10)
    turns = EngineTurns(sim)
    sim.broker.wakeup.set()  # one turn through the counted process, then the engine sleeps
    wait_until(lambda: turns.count >= 1)
    yield sim, turns


@pytest.mark.slow
def test_an_idle_engine_does_not_wake(idle_sim: tuple[SimServer, EngineTurns]) -> None:
    sim, turns = idle_sim
    assert sim.broker.next_event() is None
    turns.again.clear()
    # The old engine turned every tick (10 ms): 30 turns in this window; now none.
    assert not turns.again.wait(0.3)


@pytest.mark.slow
def test_a_market_order_fills_on_time_without_a_request(sim_factory: SimFactory) -> None:
    sim = sim_factory(fill_delay_ms=200)
    caller = SimCaller(sim).login()
    caller.open(buysell="BUY")
    due = sim.broker.next_event()
    assert due is not None and 0 < due - sim.clock.now() <= 0.2
    # next_event() does not process: it turns None only when the engine has filled it
    wait_until(lambda: sim.broker.next_event() is None, timeout=5)
    assert sim.clock.now() >= due


def test_a_clock_advance_wakes_the_sleeping_engine(sim_factory: SimFactory) -> None:
    sim = sim_factory(fill_delay_ms=0)
    caller = SimCaller(sim).login()
    trade_id = caller.open(buysell="BUY", holdtime=3600)
    caller.wait_open(trade_id)
    due = sim.broker.next_event()
    assert due is not None and due - sim.clock.now() > 3000  # the engine sleeps
    sim.clock.advance(3600)  # the clock alone, not SimServer.advance (which processes)
    wait_until(lambda: sim.broker.next_event() is None, timeout=5)
    assert caller.ledger_entry(trade_id)["status"] == "CLOSED"


def test_an_order_waiting_for_a_price_is_polled(sim_factory: SimFactory) -> None:
    sim = sim_factory(tick_ms=10)
    caller = SimCaller(sim).login()
    ask = sim.set_price("BTCUSD", 30_000)["askPrice"]
    caller.open(buysell="BUY", ordertype="LMT", price=ask * 0.5, timeinforce=3600)
    assert sim.broker.next_event() == pytest.approx(sim.clock.now(), abs=1)
    turns = EngineTurns(sim)
    wait_until(lambda: turns.count >= 3)  # polled every tick while the order waits


def test_stop_is_prompt_with_a_sleeping_engine_and_idle_http(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    assert sim.broker.next_event() is None
    begin = time.monotonic()
    sim.stop()
    assert time.monotonic() - begin < 1
    assert all(not t.is_alive() for t in sim._threads)


@pytest.mark.process
def test_multirun_sim_exits_promptly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "multirun", "sim", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out = proc.stdout
        assert out is not None
        wait_until(lambda: "http://" in out.readline(), timeout=30)
        begin = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - begin < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
