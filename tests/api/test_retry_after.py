"""A 429's Retry-After is the server's word on pacing (issue 23, case 13)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from multirun.api.client import AlgogeneClient
from multirun.api.transport import RawReply, retry_after
from multirun.core.errors import RateLimitError
from multirun.core.redact import Secret
from tests.api.fakes import MockTransport, Routes, reply
from tests.api.test_client import API_KEY, TOKENS, FakeClock, listing, trade

SESSION = {"res": {"token": TOKENS[0], "expired_utc": "2026-11-24 09:00:00.000000"}}
THROTTLED = {"status": "FAIL", "err_msg": "too many requests"}


def throttled(seconds: float | None) -> RawReply:
    return RawReply(429, reply(THROTTLED).body, retry_after_s=seconds)


def client_of(opened: Any, budget: float) -> tuple[AlgogeneClient, MockTransport, FakeClock]:
    clock = FakeClock()
    transport = MockTransport(Routes(session=SESSION, opened_trades=opened))
    client = AlgogeneClient(
        "https://algo.test/rest/v1", "alice", Secret(API_KEY), "livetest", "ACC-1",
        clock=clock, rng=random.Random(7), read_budget_s=budget, transport=transport,
    )  # fmt: skip
    return client, transport, clock


def test_a_read_waits_the_retry_after_it_was_told_before_asking_again() -> None:
    answers = iter([throttled(5.0), reply(listing(trade()))])
    client, transport, clock = client_of(lambda request: next(answers), budget=20.0)
    assert len(client.opened_trades()) == 1
    assert len(transport.sent("opened_trades")) == 2
    assert clock.sleeps == [5.0]  # not a 0-80 ms jitter


def test_a_retry_after_past_the_deadline_is_raised_at_once_carrying_it() -> None:
    client, transport, clock = client_of(lambda request: throttled(3600.0), budget=20.0)
    with pytest.raises(RateLimitError, match="Retry-After 3600 s") as raised:
        client.opened_trades()
    assert raised.value.retry_after_s == 3600.0
    assert len(transport.sent("opened_trades")) == 1 and clock.sleeps == []


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 3 ", 3.0), ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
     ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0), ("soon", None), ("-5", None), ("", None),
     (None, None)],
)  # fmt: skip
def test_retry_after_reads_seconds_or_an_http_date(header: str | None, seconds: float) -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert retry_after(header, now) == seconds


def test_the_http_transport_reads_retry_after_from_a_429(sim_factory: Any) -> None:
    sim = sim_factory(faults={"rate_limit_rate": 1.0, "retry_after_s": 7})
    client = AlgogeneClient(sim.base_url, "alice", Secret("k"), "livetest", "ACC-1",
                            read_budget_s=1.0)  # fmt: skip
    with pytest.raises(RateLimitError) as raised:
        client.balance()
    assert raised.value.retry_after_s == 7.0
    assert sim.stats()["requests"]["session"] == 1  # told to wait 7 s: asked once
    client.close()


def test_a_close_confirmation_stops_polling_when_told_to_wait_past_its_deadline() -> None:
    client, transport, _ = client_of(lambda request: throttled(3600.0), budget=20.0)
    transport.handler.routes["close_orders"] = {"status": "OK", "res": "'1' submitted"}
    with pytest.raises(RateLimitError):
        client.close_trades(["1"], confirm_timeout_s=10.0)
    assert len(transport.sent("opened_trades")) == 1  # not polled again and again
