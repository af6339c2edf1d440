"""The real client over :class:`tests.api.fakes.MockTransport`: its logic without HTTP."""

from __future__ import annotations

import random
from typing import Any

import pytest

from multirun.api.client import AlgogeneClient
from multirun.api.transport import Request
from multirun.core.errors import AuthError, NetworkError, OrderRejected, ServerError
from multirun.core.redact import Secret
from tests.api.fakes import MockTransport, Routes, reply
from tests.api.test_client import ACK, API_KEY, TOKENS, FakeClock, listing, trade

SESSION = {"res": {"token": TOKENS[0], "expired_utc": "2026-11-24 09:00:00.000000"}}


def make_client(routes: Routes, **kwargs: Any) -> tuple[AlgogeneClient, MockTransport]:
    transport = MockTransport(routes)
    client = AlgogeneClient(
        "https://algo.test/rest/v1", "alice", Secret(API_KEY), "livetest", "ACC-1",
        clock=FakeClock(), rng=random.Random(7), read_budget_s=3.0, transport=transport,
        **kwargs,
    )  # fmt: skip
    return client, transport


def test_each_request_carries_the_credentials_and_a_session_token_first() -> None:
    client, transport = make_client(Routes(session=SESSION, opened_trades=listing(trade())))
    client.opened_trades()
    assert [r.endpoint for r in transport.requests] == ["session", "opened_trades"]
    assert transport.requests[0].dated  # the session's Date header is the one read
    payload = transport.sent("opened_trades")[0]
    assert payload["token"] == TOKENS[0] and payload["accountid"] == "ACC-1"
    client.close()
    assert transport.closed


def test_a_read_is_retried_after_a_server_error_then_succeeds() -> None:
    answers = iter([reply({"status": "FAIL"}, 503), reply(listing(trade()))])
    client, transport = make_client(
        Routes(session=SESSION, opened_trades=lambda request: next(answers))
    )
    assert len(client.opened_trades()) == 1
    assert len(transport.sent("opened_trades")) == 2


def test_a_refused_order_is_not_sent_again() -> None:
    refusal = {"status": "FAIL", "err_msg": "insufficient margin"}
    client, transport = make_client(Routes(session=SESSION, open_order=refusal))
    with pytest.raises(OrderRejected, match="insufficient margin"):
        client.open_order("BTCUSD", 1, 0.5, "mr-a-1")
    assert len(transport.sent("open_order")) == 1


def test_a_lost_reply_is_found_by_its_order_ref_not_sent_twice() -> None:
    sent: list[Request] = []

    def open_order(request: Request) -> object:
        sent.append(request)
        raise NetworkError("open_order: connection failed or dropped", endpoint="open_order")

    def opened(request: Request) -> object:  # the order executed: it is listed by its ref
        return listing(trade("746805590705", ref="mr-a-1")) if sent else listing()

    routes = Routes(
        session=SESSION, open_order=open_order, opened_trades=opened, pending_trades=listing()
    )
    client, _ = make_client(routes)
    ack = client.open_order("BTCUSD", 1, 0.5, "mr-a-1")
    assert ack.trade_id == "746805590705" and ack.order_ref == "mr-a-1"
    assert len(sent) == 1  # a write is never repeated


def test_the_request_hook_hears_each_endpoint_and_outcome() -> None:
    heard: list[tuple[str, str]] = []
    refusal = {"status": "FAIL", "err_msg": "no such instrument"}
    client, _ = make_client(
        Routes(session=SESSION, open_order=refusal, balance=lambda r: reply({}, 500)),
        on_request=lambda endpoint, outcome: heard.append((endpoint, outcome)),
    )
    with pytest.raises(OrderRejected):
        client.open_order("XXX", 1, 0.5, "mr-a-2")
    with pytest.raises(ServerError):
        client.balance()
    assert heard[:2] == [("session", "2xx"), ("open_order", "refused")]
    assert set(heard[2:]) == {("balance", "5xx")}


def test_an_ack_parses_from_the_canned_reply() -> None:
    client, _ = make_client(Routes(session=SESSION, open_order=ACK))
    ack = client.open_order("BTCUSD", 1, 0.5, "mr-a-3")
    assert (ack.trade_id, ack.status) == ("7", "PENDING_TO_FILL")


@pytest.mark.parametrize("fragment", [API_KEY[2:9], API_KEY[2:9].lower(), API_KEY[4:10].upper()])
def test_a_fragment_of_the_key_echoed_in_an_error_stays_out_of_the_message(fragment) -> None:
    # The message is what logs and status.json's last_error quote.
    echo = {"status": "FAIL", "err_msg": f"api key {fragment}... is not valid"}
    client, _ = make_client(Routes(session=SESSION, opened_trades=lambda r: reply(echo, 401)))
    with pytest.raises(AuthError) as raised:
        client.opened_trades()
    assert fragment not in str(raised.value) and "api key ****... is not valid" in str(raised.value)
