"""The client against the simulator, with each fault kind switched on.

Every test drives open/close cycles the way a worker would (a unique orderRef per
order; after OrderUncertain, settle with find_order before sending again) and then
checks the simulator's ledger: every orderRef exactly once (none duplicated, none
lost), every order closed, and no secret in any log line or exception text.

The mixed-fault soak is the issue's acceptance run: 500 cycles (about a minute on two
cores), marked ``soak`` and so left out of the default run (``-m soak`` selects it;
``MULTIRUN_SOAK_CYCLES`` changes the count). A 60-cycle version of it stays in.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from multirun.api import models
from multirun.api.client import AlgogeneClient
from multirun.api.models import OrderAck, Token
from multirun.core.clock import StopSignal
from multirun.core.errors import ApiError, OrderUncertain
from multirun.core.redact import Secret
from multirun.sim import SimServer
from tests.conftest import SimFactory

API_KEY = "sim-key-9f8e7d6c5b4a3210"
FAST = dict(connect_timeout=0.5, read_timeout=0.25, read_budget_s=8.0, reconcile_window_s=0.25)
SLOW_MS = 750.0  # a held-back reply: three times the client's read timeout


@dataclass
class Run:
    """What one soak saw: acks by orderRef, every error the client raised, tokens issued."""

    acks: dict[str, OrderAck] = field(default_factory=dict)
    errors: list[ApiError] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, error: ApiError) -> None:
        with self.lock:
            self.errors.append(error)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Run:
    """A Run that also records every session token the clients receive."""
    seen = Run()
    original = models.token_from_api

    def spy(reply: object) -> Token:
        token = original(reply)
        with seen.lock:
            seen.tokens.add(token.value)
        return token

    monkeypatch.setattr(models, "token_from_api", spy)
    return seen


def make_client(sim: SimServer, account: str, **kwargs: Any) -> AlgogeneClient:
    options = {**FAST, **kwargs}
    return AlgogeneClient(sim.base_url, "alice", Secret(API_KEY), "livetest", account, **options)


def settle(client: AlgogeneClient, ref: str, run: Run) -> models.Trade | None:
    """find_order until the server answers (what a worker does after OrderUncertain)."""
    for _ in range(50):
        try:
            return client.find_order(ref)
        except ApiError as error:
            run.note(error)
    raise AssertionError(f"{ref}: the server never answered find_order")


def open_once(client: AlgogeneClient, ref: str, run: Run) -> OrderAck:
    """Place ``ref`` exactly once, whatever the faults."""
    for _ in range(20):
        try:
            return client.open_order("EURUSD", "BUY", 0.01, ref)
        except OrderUncertain as error:
            run.note(error)
            trade = settle(client, ref, run)
            if trade is not None:
                return OrderAck(trade.trade_id, "FILLED", trade.timestamp, ref)
        except ApiError as error:  # definitive: not placed, so sending again is safe
            run.note(error)
    raise AssertionError(f"{ref}: could not be placed in 20 attempts")


def close_once(client: AlgogeneClient, trade_id: str, run: Run) -> None:
    for _ in range(20):
        try:
            client.close_trades([trade_id], confirm_timeout_s=5.0)
            return
        except ApiError as error:
            run.note(error)
    raise AssertionError(f"trade {trade_id}: could not be closed in 20 attempts")


def cycles(sim: SimServer, account: str, count: int, run: Run, **kwargs: Any) -> None:
    with make_client(sim, account, **kwargs) as client:
        for i in range(count):
            ref = f"mr-{account}-{i}"
            ack = open_once(client, ref, run)
            with run.lock:
                run.acks[ref] = ack
            close_once(client, ack.trade_id, run)


def in_threads(jobs: list[Callable[[], None]]) -> None:
    failures: list[BaseException] = []

    def guard(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=guard, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def check_ledger(sim: SimServer, run: Run, expected_refs: set[str]) -> None:
    ledger = [o for o in sim.ledger() if str(o["orderRef"]).startswith("mr-")]
    counts = Counter(str(o["orderRef"]) for o in ledger)
    duplicated = sorted(ref for ref, n in counts.items() if n > 1)
    lost = sorted(expected_refs - set(counts))
    assert not duplicated, f"duplicated orderRefs: {duplicated}"
    assert not lost, f"lost orderRefs: {lost}"
    assert set(counts) == expected_refs
    by_ref = {str(o["orderRef"]): o for o in ledger}
    for ref, ack in run.acks.items():
        assert str(by_ref[ref]["tradeID"]) == ack.trade_id, ref
    still_open = [o["orderRef"] for o in ledger if o["status"] != "CLOSED"]
    assert not still_open, f"not closed: {still_open}"


def check_no_secrets(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    secrets = {API_KEY, *run.tokens}
    assert run.tokens, "no token was ever issued?"
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    texts += [str(e) for e in run.errors] + [repr(e) for e in run.errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text
        assert not re.search(r"(api_key|token)=(?!\*\*\*\*)", text), text
    for error in run.errors:
        assert "\n" not in str(error) and "/rest/v1" not in str(error)


FAULT_KINDS = {
    "error": {"error_rate": 0.3},
    "drop": {"drop_rate": 0.3},
    "malformed": {"malformed_rate": 0.3},
    "revoke": {"revoke_rate": 0.3},
    "slow_success": {"slow_success_rate": 0.15, "slow_success_ms": SLOW_MS},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_each_fault_kind_loses_and_duplicates_nothing(sim_factory, run, caplog, kind) -> None:
    caplog.set_level(logging.DEBUG)
    sim = sim_factory(seed=11, faults=FAULT_KINDS[kind])
    accounts = ("ACC-K", "ACC-L")  # 8 cycles, two clients side by side
    in_threads([lambda a=a: cycles(sim, a, 4, run) for a in accounts])
    injected = sim.stats()["faults_injected"]
    assert injected.get(kind, 0) > 0, injected
    check_ledger(sim, run, {f"mr-{a}-{i}" for a in accounts for i in range(4)})
    check_no_secrets(run, caplog)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["slow_success", "malformed"])
def test_executed_order_with_a_lost_reply_is_found_not_resent(sim_factory, kind) -> None:
    """Every open_order executes but its reply is lost (held back past the read timeout,
    or cut short): reconciliation must recognise the order; it is never sent twice."""
    faults = {f"{kind}_rate": 1.0, "slow_success_ms": SLOW_MS, "endpoints": ["open_order"]}
    sim = sim_factory(seed=3, faults=faults)
    # A reconcile window wide enough for a loaded machine: the order is found at the
    # first lookup, so a wider window costs nothing when it works.
    with make_client(sim, "ACC-S", reconcile_window_s=5.0) as client:
        ack = client.open_order("EURUSD", "SELL", 0.01, "mr-ACC-S-1")
    assert ack.status == "FILLED"
    assert sim.stats()["requests"].get("open_order") == 1
    (order,) = [o for o in sim.ledger() if o["orderRef"] == "mr-ACC-S-1"]
    assert str(order["tradeID"]) == ack.trade_id


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["drop", "error"])
def test_an_unanswered_order_is_never_resent(sim_factory, kind) -> None:
    """A send refused without executing (dropped, or a 5xx) looks like one the server may
    still execute late: it is looked for, then reported uncertain, never sent again."""
    sim = sim_factory(seed=3, faults={f"{kind}_rate": 1.0, "endpoints": ["open_order"]})
    with make_client(sim, "ACC-R") as client:
        client.balance()
        with pytest.raises(OrderUncertain, match="never resent"):
            client.open_order("EURUSD", "BUY", 0.01, "mr-ACC-R-1")
    assert sim.stats()["requests"].get("open_order") == 1
    assert sim.stats()["requests"].get("strategy_trade", 0) >= 1
    assert not [o for o in sim.ledger() if o["orderRef"] == "mr-ACC-R-1"]


def lift_after(sim: SimServer, endpoint: str, count: int) -> None:
    """Switch faults off once ``endpoint`` has been requested ``count`` times."""
    deadline = time.monotonic() + 10.0
    while sim.stats()["requests"].get(endpoint, 0) < count and time.monotonic() < deadline:
        time.sleep(0.002)
    sim.set_faults(drop_rate=0.0, error_rate=0.0)


@pytest.mark.slow
def test_unreachable_reconciliation_is_order_uncertain(sim_factory, run) -> None:
    sim = sim_factory(seed=4)
    with make_client(sim, "ACC-U", read_budget_s=0.5) as client:
        client.balance()  # token fetched before the faults start
        sim.set_faults(drop_rate=1.0)
        with pytest.raises(OrderUncertain):
            client.open_order("EURUSD", "BUY", 0.01, "mr-ACC-U-1")
        sim.set_faults(drop_rate=0.0)
        assert client.find_order("mr-ACC-U-1") is None  # dropped: nothing executed
    assert not [o for o in sim.ledger() if o["orderRef"] == "mr-ACC-U-1"]


@pytest.mark.slow
def test_mixed_faults(sim_factory, run, caplog) -> None:
    """The soak below, short enough for every run: 60 cycles over ten accounts."""
    mixed_faults(sim_factory, run, caplog, 60, accounts=10)


@pytest.mark.soak
def test_mixed_faults_soak(sim_factory, run, caplog) -> None:
    """The issue's acceptance run: 500 cycles (``MULTIRUN_SOAK_CYCLES`` changes the count).
    Opt-in: ``python -m pytest -m soak``."""
    mixed_faults(sim_factory, run, caplog, int(os.environ.get("MULTIRUN_SOAK_CYCLES", "500")))


def mixed_faults(sim_factory: SimFactory, run: Run, caplog: pytest.LogCaptureFixture,
                 total: int, accounts: int = 5) -> None:  # fmt: skip
    """20% of requests faulted, every kind mixed (slow success included), ``total``
    open/close cycles over ``accounts`` accounts in parallel (one client each)."""
    caplog.set_level(logging.DEBUG)
    names = [f"ACC-{n}" for n in range(accounts)]
    share = [total // accounts + (1 if n < total % accounts else 0) for n in range(accounts)]
    faults = {
        "error_rate": 0.04, "drop_rate": 0.04, "malformed_rate": 0.04, "revoke_rate": 0.04,
        "slow_success_rate": 0.04, "slow_success_ms": SLOW_MS,
    }  # fmt: skip
    sim = sim_factory(seed=2026, faults=faults)
    started = time.monotonic()
    in_threads([lambda a=a, n=n: cycles(sim, a, n, run) for a, n in zip(names, share, strict=True)])
    elapsed = time.monotonic() - started
    stats = sim.stats()
    expected = {f"mr-{a}-{i}" for a, n in zip(names, share, strict=True) for i in range(n)}
    check_ledger(sim, run, expected)
    check_no_secrets(run, caplog)
    faulted = sum(stats["faults_injected"].values())
    requests_made = sum(stats["requests"].values())
    print(
        f"\nsoak: {total} cycles in {elapsed:.1f} s; {requests_made} requests, {faulted} faulted "
        f"({faulted / requests_made:.0%}) {stats['faults_injected']}; {len(run.errors)} client "
        f"errors surfaced; tokens issued {stats['tokens_issued']}; ledger orders {len(expected)}"
        f"; duplicated 0, lost 0"
    )
    assert set(stats["faults_injected"]) >= {"error", "drop", "malformed", "revoke", "slow_success"}


class SimTime:
    """The client's clocks, following the simulator's clock (which tests advance); the
    wall clock is ``skew_s`` off the simulator's."""

    def __init__(self, sim: SimServer, skew_s: float = 0.0) -> None:
        self.sim = sim
        self.skew_s = skew_s

    def monotonic(self) -> float:
        return time.monotonic() + self.sim.clock.offset

    def time(self) -> float:
        return self.sim.clock.now() + self.skew_s

    def wait(self, stop: StopSignal, seconds: float) -> bool:
        return stop.wait(max(0.0, seconds))


@pytest.mark.slow
@pytest.mark.parametrize("skew_s", [0.0, -90.0, 90.0])
def test_short_tokens_cost_one_session_call_per_lifetime(sim_factory, skew_s) -> None:
    """Done-when (b): a 5 s token over 60 s of calls (virtual time: the simulator's clock is
    advanced, nobody sleeps) costs about 12 session calls, and no call is refused for an
    expired token, also when this machine's clock is off by ``skew_s``."""
    sim = sim_factory(seed=5, token_ttl_s=5.0)  # its Date header follows its clock
    skewed = SimTime(sim, skew_s)
    with make_client(sim, "ACC-T", clock=skewed) as client:
        for _ in range(600):  # one call every 100 ms for 60 s
            client.opened_trades()
            sim.advance(0.1)
        fetched = client.session_fetches
    stats = sim.stats()
    print(f"\nskew {skew_s:+.0f} s: {stats['requests']['session']} session calls in 60 s")
    assert stats["auth_rejections"] == 0
    assert stats["requests"]["session"] == fetched
    assert 12 <= fetched <= 15


def test_an_order_to_a_closed_port_is_not_placed() -> None:
    """The server went away (its port closed): the pooled connection is found dropped, a
    new one is refused, nothing is sent, and the order is not placed (not uncertain)."""
    from multirun.api.transport import NotConnected

    sim = SimServer().start()
    client = AlgogeneClient(sim.base_url, "alice", Secret("sim-key-0123456789"), "livetest", "A1")
    try:
        client.balance()  # a session token and a pooled connection
        sim.stop()
        began = time.monotonic()
        with pytest.raises(NotConnected, match="open_order: connection could not be made"):
            client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
        assert time.monotonic() - began < 2.0  # no search by orderRef
    finally:
        client.close()
        sim.stop()
