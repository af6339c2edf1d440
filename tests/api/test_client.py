"""Unit tests of :mod:`multirun.api.client` against canned replies (``responses``).

Time is fake: the client's clock (and so its waits) is a :class:`FakeClock`, so backoff,
reconciliation windows and token lifetimes pass instantly.
"""

from __future__ import annotations

import json
import logging
import random
import re
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses
import urllib3

from multirun.api.client import AlgogeneClient
from multirun.api.http_session import http_session
from multirun.api.models import OrderAck
from multirun.api.transport import NotConnected
from multirun.core.errors import (
    ApiError,
    AuthError,
    CloseUnconfirmed,
    NetworkError,
    OrderRejected,
    OrderUncertain,
    ProtocolError,
    RateLimitError,
    RequestRejected,
    ServerError,
)
from multirun.core.redact import RedactingFilter, Secret, mask_fields
from tests import conftest

BASE = "https://algo.test/rest/v1"
API_KEY = "KEY-s3cr3t-0123456789"
TOKENS = [f"TOK-s3cr3t-{i:04d}-abcdef" for i in range(20)]
SECRETS = [API_KEY, *TOKENS]
T0 = datetime(2026, 11, 24, 8, 0, 0, tzinfo=UTC)


class FakeClock(conftest.FakeClock):
    def __init__(self, wall: datetime = T0) -> None:
        super().__init__(wall)


class Server:
    """Canned session tokens: the n-th /session reply hands out TOKENS[n]."""

    def __init__(self, rsps: responses.RequestsMock, clock: FakeClock) -> None:
        self.rsps = rsps
        self.clock = clock
        self.issued = 0
        self.skew_s = 0.0  # server clock minus local clock
        self.ttl_s = 3600.0
        self.send_date = True
        rsps.add_callback(responses.GET, f"{BASE}/session", callback=self._session)

    def _session(self, request: requests.PreparedRequest) -> tuple[int, dict, str]:
        token = TOKENS[self.issued]
        self.issued += 1
        server_now = datetime.fromtimestamp(self.clock.wall + self.skew_s, UTC)
        expires = (server_now + timedelta(seconds=self.ttl_s)).replace(tzinfo=None)
        headers = {"Date": format_datetime(server_now, usegmt=True)} if self.send_date else {}
        body = {"res": {"token": token, "expired_utc": expires.strftime("%Y-%m-%d %H:%M:%S.%f")}}
        return 200, headers, json.dumps(body)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(rsps: responses.RequestsMock, clock: FakeClock) -> Server:
    return Server(rsps, clock)


def make_client(clock: FakeClock, **kwargs: Any) -> AlgogeneClient:
    kwargs.setdefault("read_budget_s", 3.0)
    return AlgogeneClient(
        BASE, "alice", Secret(API_KEY), "livetest", "ACC-1",
        clock=clock, rng=random.Random(7), **kwargs,
    )  # fmt: skip


@pytest.fixture
def client(clock: FakeClock, server: Server) -> Iterator[AlgogeneClient]:
    with make_client(clock) as c:
        yield c


def trade(trade_id: str = "746805590705", ref: str = "", **over: Any) -> dict[str, Any]:
    row = {
        "broker": "ALGOGENE", "buysell": 1, "channel": "api", "expiry": "", "holdtime": 0.0,
        "instrument": "BTCUSD", "market": "CRYPTO", "openclose": "open", "order_Ref": ref,
        "price": 30086.67, "product_type": "SPOT", "right": "", "stopLossLevel": 0.0,
        "strike": 0.0, "symbol": "BTCUSD", "takeProfitLevel": 0.0,
        "timestamp": "2023-08-31 14:00:53.787035", "trade_ID": trade_id,
        "unrealizedPL": -36.56, "volume": 1.0,
    }  # fmt: skip
    row.update(over)
    return row


def listing(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(rows), "res": list(rows)}


ACK = {"status": "PENDING_TO_FILL", "timestamp_utc": "2023-08-31 14:00:51.330180", "tradeID": 7}


def assert_clean(exc: BaseException) -> None:
    """No secret, URL or newline in the message; no secret anywhere in the traceback."""
    text = str(exc)
    assert "\n" not in text
    assert "http://" not in text and "https://" not in text and "/rest/v1" not in text
    assert not re.search(r"(api_key|token)=(?!\*\*\*\*)", text)
    full = "".join(traceback.format_exception(exc))
    for secret in SECRETS:
        assert secret not in full
        assert secret not in repr(exc)


def calls_to(rsps: responses.RequestsMock, endpoint: str) -> list[Any]:
    return [c for c in rsps.calls if c.request.url.split("?")[0].endswith("/" + endpoint)]


def body_of(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


# --- transport --------------------------------------------------------------------


def test_get_puts_every_parameter_in_the_query_string(client, rsps) -> None:
    rsps.get(f"{BASE}/opened_trades", json=listing(trade()))
    client.opened_trades(trade_id=746805590705)
    call = calls_to(rsps, "opened_trades")[0]
    query = requests.utils.urlparse(call.request.url).query
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert params == {
        "user": "alice", "api_key": API_KEY, "runmode": "livetest", "accountid": "ACC-1",
        "token": TOKENS[0], "tradeID": "746805590705",
    }  # fmt: skip
    assert call.request.body is None
    assert call.request.req_kwargs["timeout"] == (3.05, 3.0)  # read timeout capped by budget


def test_post_sends_a_json_body_with_a_json_content_type(client, rsps) -> None:
    rsps.post(f"{BASE}/open_order", json=ACK)
    ack = client.open_order("BTCUSD", 1, 0.5, "mr-a-1", take_profit=31000.0)
    assert ack == OrderAck("7", "PENDING_TO_FILL", "2023-08-31 14:00:51.330180", "mr-a-1")
    call = calls_to(rsps, "open_order")[0]
    assert call.request.headers["Content-Type"] == "application/json"
    assert "?" not in call.request.url
    assert body_of(call) == {
        "user": "alice", "api_key": API_KEY, "runmode": "livetest", "accountid": "ACC-1",
        "token": TOKENS[0], "instrument": "BTCUSD", "buysell": "BUY", "volume": 0.5,
        "ordertype": "MKT", "orderRef": "mr-a-1", "takeProfitLevel": 31000.0,
    }  # fmt: skip
    assert call.request.req_kwargs["timeout"] == (3.05, 10.0)


def test_every_call_has_explicit_timeouts_and_one_session(client, rsps, monkeypatch) -> None:
    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("module-level requests call: no connection reuse")

    monkeypatch.setattr(requests, "get", forbidden)
    monkeypatch.setattr(requests, "post", forbidden)
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    rsps.get(f"{BASE}/realtime_price", json={"count": 0, "res": {}})
    client.balance()
    with pytest.raises(RequestRejected):
        client.realtime_price("BTCUSD")
    for call in rsps.calls:
        connect, read = call.request.req_kwargs["timeout"]
        assert connect > 0 and read > 0


def test_market_data_needs_no_token(client, rsps, server) -> None:
    quote = {"timestamp": "t", "bidPrice": 1.0, "askPrice": 2.0}
    rsps.get(f"{BASE}/realtime_price", json={"count": 2, "res": {"BTCUSD": quote, "EURUSD": quote}})
    client.realtime_price(["BTCUSD", "EURUSD"])
    assert server.issued == 0
    assert "token" not in calls_to(rsps, "realtime_price")[0].request.url
    assert "symbols=BTCUSD%2CEURUSD" in calls_to(rsps, "realtime_price")[0].request.url


def test_argument_errors_send_nothing(client, rsps) -> None:
    for bad in (
        dict(order_ref=""),
        dict(order_ref=" mr-a-1"),
        dict(order_ref="mr-a-1\n"),
        dict(order_ref="r", ordertype="LIMIT"),
        dict(order_ref="r", ordertype="LMT"),
        dict(order_ref="r", buysell="HOLD"),
        dict(order_ref="r", volume=0),
        dict(order_ref="r", volume=float("nan")),
        dict(order_ref="r", volume=float("inf")),
        dict(order_ref="r", volume="1"),
        dict(order_ref="r", volume=True),
        dict(order_ref="r", ordertype="LMT", price=float("nan")),
        dict(order_ref="r", take_profit=float("inf")),
        dict(order_ref="r", holdtime="60"),
    ):
        kwargs = {"instrument": "BTCUSD", "buysell": "BUY", "volume": 1.0, **bad}
        with pytest.raises(ValueError):
            client.open_order(**kwargs)
    assert not rsps.calls


# --- parsing ------------------------------------------------------------------------


def test_parses_listings_and_compares_trade_ids_as_strings(client, rsps) -> None:
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("746805590705", "mr-a-1")))
    rsps.get(f"{BASE}/pending_trades", json=listing(trade("5", "mr-a-2", timeinforce=60)))
    (opened,) = client.opened_trades()
    assert opened.trade_id == "746805590705" and opened.order_ref == "mr-a-1"
    assert opened.buysell == 1 and opened.volume == 1.0 and opened.unrealized_pl == -36.56
    assert client.find_order("mr-a-1") == opened
    assert client.find_order("mr-a-2").trade_id == "5"
    assert client.find_order("mr-a-3") is None


def test_a_foreign_trade_with_a_numeric_ref_does_not_blind_the_listing(client, rsps) -> None:
    """Trades opened by other tools share the account: a numeric orderRef (echoed as a JSON
    number) must not make the whole listing unreadable, or no order of ours could be found."""
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1", 123), trade("2", "mr-a-1")))
    rsps.get(f"{BASE}/query_order", json={**FILLED, "orderRef": 123})
    assert client.find_order("mr-a-1").trade_id == "2"
    assert [t.order_ref for t in client.opened_trades()] == ["123", "mr-a-1"]
    assert client.query_order(1).order_ref == "123"


@pytest.mark.parametrize("nested", [True, False])
def test_balance_at_top_level_or_under_res(client, rsps, nested) -> None:
    fields = {"NAV": 100.5, "available_Balance": 90.0, "margin_Used": 10.5, "realized_PL": 1.0,
              "unrealized_PL": -0.5, "timestamp": "t", "BaseCurrency": "USD"}  # fmt: skip
    rsps.get(f"{BASE}/balance", json={"res": fields} if nested else fields)
    balance = client.balance()
    assert (balance.nav, balance.available_balance, balance.margin_used) == (100.5, 90.0, 10.5)
    assert balance.base_currency == "USD"


def test_parses_positions_accounts_quotes_bars_and_query_order(client, rsps) -> None:
    rsps.get(f"{BASE}/positions", json={"count": 1, "res": {"EURUSD": {
        "LastTradeTime": "t", "MarketValue": 5.0, "Position": 0.5, "netVolume": 0.5}}})  # fmt: skip
    rsps.get(f"{BASE}/accounts", json={"count": 1, "res": [{
        "accountid": "ACC-1", "runmode": "livetest", "NAV": 10.0, "availableBalance": 9.0,
        "marginUsed": 1.0, "realizedPL": 0.0, "unrealizedPL": 0.0, "lastUpdatedTime": "t",
        "isTrading": True}]})  # fmt: skip
    rsps.get(f"{BASE}/realtime_price", json={"count": 1, "res": {"BTCUSD": {
        "timestamp": "t", "bidPrice": 1.0, "askPrice": 3.0, "bidSize": 1, "askSize": 2,
        "bidOrderBook": [], "askOrderBook": []}}})  # fmt: skip
    rsps.get(f"{BASE}/history_price", json={"count": 1, "res": [
        {"t": "2023-08-31 14:00:00", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "b": 1, "a": 2,
         "m": 1.5, "v": 10}]})  # fmt: skip
    rsps.get(f"{BASE}/query_order", json={"status": "FILLED", "err_msg": "", "tradeID": 42,
              "orderRef": "mr-a-1", "buysell": 1, "price": 2.0, "volume": 1.0,
              "instrument": "BTCUSD"})  # fmt: skip
    assert client.positions()[0].net_volume == 0.5
    account = client.accounts()[0]
    assert account.accountid == "ACC-1" and account.nav == 10.0
    assert "accountid" not in calls_to(rsps, "accounts")[0].request.url
    assert client.realtime_price("BTCUSD")["BTCUSD"].mid == 2.0
    bars = client.history_price("BTCUSD", "M", 1, before=datetime(2023, 8, 31, 14, 1))
    assert bars[0].close == 1.5
    history_url = calls_to(rsps, "history_price")[0].request.url
    assert "timestamp=2023-08-31+14%3A01%3A00.000000" in history_url
    status = client.query_order(42)
    assert (status.trade_id, status.status, status.order_ref) == ("42", "FILLED", "mr-a-1")


MALFORMED = [
    pytest.param({"body": "{not json"}, id="not-json"),
    pytest.param({"body": '{"count": 1, "res": [{"trade_ID": "1"'}, id="cut-short"),
    pytest.param({"json": [1, 2]}, id="not-an-object"),
    pytest.param({"json": {"count": 0}}, id="missing-res"),
    pytest.param({"json": {"res": {"a": 1}}}, id="res-wrong-type"),
    pytest.param({"json": listing({"trade_ID": "1"})}, id="trade-missing-fields"),
    pytest.param({"json": listing(trade(volume="1.0"))}, id="volume-is-a-string"),
    pytest.param({"json": listing(trade(buysell=2))}, id="bad-buysell"),
    pytest.param({"json": listing(trade(trade_ID=True))}, id="id-is-a-bool"),
    pytest.param({"body": "[" * 100_000}, id="nested-too-deep"),
    pytest.param(
        {"body": json.dumps(listing(trade(price=-1))).replace("-1", "9" * 400)},
        id="number-too-large",
    ),
    pytest.param({"body": json.dumps(listing(trade(price=float("nan"))))}, id="price-is-NaN"),
    pytest.param({"body": json.dumps(listing(trade(volume=float("inf"))))}, id="volume-is-inf"),
]


@pytest.mark.parametrize("reply", MALFORMED)
def test_malformed_read_replies_raise_protocol_error_after_retries(client, rsps, reply) -> None:
    rsps.get(f"{BASE}/opened_trades", **reply)
    with pytest.raises(ProtocolError) as info:
        client.opened_trades()
    assert info.value.endpoint == "opened_trades"
    assert "opened_trades" in str(info.value)
    assert len(calls_to(rsps, "opened_trades")) > 1  # reads are retried
    assert_clean(info.value)


def test_server_text_inside_a_malformed_reply_message_is_scrubbed(client, rsps) -> None:
    echoed = f"EURUSD?api_key={API_KEY}&token={TOKENS[0]}" + "x" * 500
    rsps.get(f"{BASE}/positions", json={"count": 1, "res": {echoed: "not an object"}})
    with pytest.raises(ProtocolError) as info:
        client.positions()
    assert len(str(info.value)) < 250
    assert_clean(info.value)


def test_malformed_session_reply_is_a_protocol_error(clock, rsps) -> None:
    rsps.get(f"{BASE}/session", json={"res": {"token": TOKENS[0]}})
    with make_client(clock) as c, pytest.raises(ProtocolError) as info:
        c.balance()
    assert "expired_utc" in str(info.value)
    assert_clean(info.value)


# --- error mapping ------------------------------------------------------------------

READ_STATUS = [
    (401, AuthError), (403, AuthError), (429, RateLimitError), (500, ServerError),
    (502, ServerError), (503, ServerError), (504, ServerError), (400, RequestRejected),
    (404, RequestRejected), (302, ProtocolError),
]  # fmt: skip


@pytest.mark.parametrize(("status", "kind"), READ_STATUS)
def test_read_status_mapping(client, rsps, status, kind) -> None:
    echo = {"status": "FAIL", "err_msg": f"bad request api_key={API_KEY} token {TOKENS[0]}\nx"}
    rsps.get(f"{BASE}/query_order", status=status, json=echo)
    with pytest.raises(kind) as info:
        client.query_order("1")
    error = info.value
    assert type(error) is kind
    assert isinstance(error, ApiError) and error.endpoint == "query_order"
    assert error.status == status
    assert f"query_order: HTTP {status}" in str(error)
    assert_clean(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, OrderRejected), (404, OrderRejected), (422, OrderRejected), (401, AuthError),
     (403, AuthError), (429, RateLimitError)],
)  # fmt: skip
def test_definitive_order_failures_are_not_resent_or_reconciled(client, rsps, status, kind):
    rsps.post(f"{BASE}/open_order", status=status, json={"status": "FAIL", "err_msg": "no"})
    if status == 401:  # a token refusal is looked up by orderRef, resent once, then unknown
        rsps.get(f"{BASE}/pending_trades", json=listing())
        rsps.get(f"{BASE}/opened_trades", json=listing())
        rsps.get(f"{BASE}/strategy_trade", json=listing())
        kind = OrderUncertain
    with pytest.raises(kind) as info:
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    sends = 2 if status == 401 else 1  # a refused token is renewed once, then resent once
    assert len(calls_to(rsps, "open_order")) == sends
    if status != 401:
        assert not calls_to(rsps, "opened_trades") and not calls_to(rsps, "pending_trades")
    assert {body_of(c)["orderRef"] for c in calls_to(rsps, "open_order")} == {"mr-a-1"}
    assert_clean(info.value)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(client, rsps, status) -> None:
    """A redirect would re-send the credentials (the query string, or for 307/308 the JSON
    body with api_key and token) to a URL of the replier's choosing: never follow one."""
    elsewhere = "https://elsewhere.test/rest/v1"
    for endpoint in ("balance", "open_order"):
        method = responses.GET if endpoint == "balance" else responses.POST
        rsps.add(method, f"{BASE}/{endpoint}", status=status,
                 headers={"Location": f"{elsewhere}/{endpoint}"})  # fmt: skip
        rsps.add(method, f"{elsewhere}/{endpoint}", json=ACK)
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing())
    with pytest.raises(ProtocolError, match=f"balance: HTTP {status} .*redirect") as info:
        client.balance()
    assert_clean(info.value)
    rsps.get(f"{BASE}/strategy_trade", json=listing())
    with pytest.raises(OrderUncertain, match=f"HTTP {status}.*never resent"):
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert not [c for c in rsps.calls if "elsewhere.test" in c.request.url]


def test_200_fail_reply_is_a_refusal(client, rsps) -> None:
    rsps.post(f"{BASE}/open_order", json={"status": "FAIL", "err_msg": "invalid instrument"})
    with pytest.raises(OrderRejected, match="invalid instrument"):
        client.open_order("NOPE", "BUY", 1.0, "mr-a-1")


@pytest.mark.parametrize(
    "failure",
    [requests.ConnectTimeout, requests.ReadTimeout, requests.ConnectionError,
     requests.exceptions.ChunkedEncodingError],
)  # fmt: skip
def test_network_failures_of_reads_are_network_errors_without_urls(client, rsps, failure):
    url = f"{BASE}/balance?user=alice&api_key={API_KEY}&token={TOKENS[0]}"
    rsps.get(f"{BASE}/balance", body=failure(f"HTTPSConnectionPool: Max retries for url: {url}"))
    with pytest.raises(NetworkError) as info:
        client.balance()
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert len(calls_to(rsps, "balance")) > 1
    assert_clean(info.value)


def test_reads_back_off_with_full_jitter_within_the_budget(clock, server, rsps) -> None:
    rsps.get(f"{BASE}/positions", status=503)
    with make_client(clock, read_budget_s=5.0) as c:
        start = clock.mono
        with pytest.raises(ServerError):
            c.positions()
        assert clock.mono - start <= 5.0
    attempts = len(calls_to(rsps, "positions"))
    assert attempts >= 4
    for n, pause in enumerate(clock.sleeps, start=1):
        assert 0 <= pause <= min(2.0, 0.05 * 2**n)


def test_read_recovers_after_transient_failures(client, rsps, clock) -> None:
    rsps.get(f"{BASE}/positions", status=502)
    rsps.get(f"{BASE}/positions", body=requests.ReadTimeout("slow"))
    rsps.get(f"{BASE}/positions", json={"count": 0, "res": {}})
    assert client.positions() == []
    assert len(calls_to(rsps, "positions")) == 3


def test_secrets_in_a_server_message_are_masked(client, rsps) -> None:
    message = f"token {TOKENS[0]} of key {API_KEY} is not valid"
    rsps.get(f"{BASE}/balance", status=400, json={"status": "FAIL", "err_msg": message})
    client.realtime_price  # noqa: B018
    with pytest.raises(RequestRejected) as info:
        client.balance()
    assert "****" in str(info.value)
    assert_clean(info.value)


def test_urls_in_urllib3_log_lines_are_masked() -> None:
    line = f"GET /rest/v1/balance?user=alice&api_key={API_KEY}&token={TOKENS[0]}&x=1 HTTP/1.1"
    assert mask_fields(line) == (
        "GET /rest/v1/balance?user=alice&api_key=****&token=****&x=1 HTTP/1.1"
    )
    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, "f", 1,
                               '%s "%s %s"', ("http://h", "GET", line), None)  # fmt: skip
    logger = logging.getLogger("urllib3.connectionpool")
    installed = [f for f in logger.filters if isinstance(f, RedactingFilter)]
    assert installed  # importing the client installs it
    assert installed[0].filter(record)
    assert API_KEY not in record.getMessage() and TOKENS[0] not in record.getMessage()


def test_no_secret_in_any_log_line(client, rsps, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    rsps.get(f"{BASE}/balance", status=503, json={"err_msg": f"down {API_KEY}"})
    rsps.get(f"{BASE}/balance", status=401, json={"err_msg": f"token {TOKENS[0]} expired"})
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    rsps.post(f"{BASE}/open_order", body=requests.ConnectionError(f"x?api_key={API_KEY}"))
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("9", "mr-a-1")))
    client.balance()
    client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert caplog.records
    for secret in SECRETS:
        assert secret not in caplog.text


# --- tokens -------------------------------------------------------------------------


def test_token_fetched_on_first_use_and_reused(client, rsps, server) -> None:
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    assert client.token_expires_utc is None and server.issued == 0
    for _ in range(5):
        client.balance()
    assert server.issued == 1
    assert client.token_expires_utc == (T0 + timedelta(hours=1)).replace(tzinfo=None)


def test_token_renewed_ahead_of_expiry_by_the_margin(clock, server, rsps) -> None:
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    with make_client(clock, token_margin_s=60.0) as c:
        c.balance()
        clock.advance(3600 - 60 - 1)
        c.balance()
        assert server.issued == 1
        clock.advance(2)  # 59 s before expiry: inside the margin
        c.balance()
        assert server.issued == 2
    tokens = [c.request.url.split("token=")[1].split("&")[0] for c in calls_to(rsps, "balance")]
    assert tokens == [TOKENS[0], TOKENS[0], TOKENS[1]]


@pytest.mark.slow
def test_short_lived_tokens_use_a_twentieth_of_their_life_as_margin(clock, server, rsps) -> None:
    server.ttl_s = 5.0
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    with make_client(clock, token_margin_s=60.0) as c:
        for _ in range(600):  # 60 s of calls every 100 ms
            c.balance()
            clock.advance(0.1)
    assert 12 <= server.issued <= 14


def test_refused_token_is_renewed_once_and_the_call_repeated(client, rsps, server) -> None:
    rsps.get(f"{BASE}/balance", status=401, json={"status": "FAIL", "err_msg": "token expired"})
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    client.balance()
    urls = [c.request.url for c in calls_to(rsps, "balance")]
    assert server.issued == 2
    assert f"token={TOKENS[0]}" in urls[0] and f"token={TOKENS[1]}" in urls[1]


def test_token_refused_twice_is_an_auth_error(client, rsps, server) -> None:
    rsps.get(f"{BASE}/balance", status=401, json={"err_msg": "invalid token"})
    with pytest.raises(AuthError) as info:
        client.balance()
    assert server.issued == 2 and len(calls_to(rsps, "balance")) == 2
    assert_clean(info.value)


def test_refused_token_on_open_order_is_looked_up_before_the_resend(client, rsps, server):
    """Issue 17 case 6: a resend after a token refusal is preceded by the orderRef check."""
    rsps.post(f"{BASE}/open_order", status=401, json={"err_msg": "token revoked"})
    rsps.post(f"{BASE}/open_order", json=ACK)
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing())
    rsps.get(f"{BASE}/strategy_trade", json=listing())
    assert client.open_order("BTCUSD", "SELL", 1.0, "mr-a-9").trade_id == "7"
    bodies = [body_of(c) for c in calls_to(rsps, "open_order")]
    assert [b["orderRef"] for b in bodies] == ["mr-a-9", "mr-a-9"]
    assert [b["token"] for b in bodies] == [TOKENS[0], TOKENS[1]]
    names = [c.request.url.split("?")[0].rsplit("/", 1)[1] for c in rsps.calls]
    sends = [i for i, n in enumerate(names) if n == "open_order"]
    between = names[sends[0] + 1 : sends[1]]
    assert {"pending_trades", "opened_trades", "strategy_trade"} <= set(between)


def test_an_order_executed_then_refused_is_found_not_resent(client, rsps, server) -> None:
    """A server that executes the order and then refuses the token: no second send."""
    rsps.post(f"{BASE}/open_order", status=401, json={"err_msg": "token revoked"})
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("31", "mr-a-9")))
    ack = client.open_order("BTCUSD", "SELL", 1.0, "mr-a-9")
    assert (ack.trade_id, ack.status) == ("31", "FILLED")
    assert len(calls_to(rsps, "open_order")) == 1


def lost_reply_then_history(rsps: responses.RequestsMock, *later_opened: dict[str, Any]) -> None:
    """open_order's reply lost; mr-a-1 in neither listing, then in the history as trade 41;
    the opened listing read after that holds ``later_opened``."""
    rsps.post(f"{BASE}/open_order", body=requests.ReadTimeout("slow"))
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing())
    if later_opened:
        rsps.get(f"{BASE}/opened_trades", json=listing(*later_opened))
    rows = [{"trade_ID": 41, "order_ref": "mr-a-1", "price": 1.0, "volume": 1.0,
             "timestamp": "2026-01-01 00:00:00"}]  # fmt: skip
    rsps.get(f"{BASE}/strategy_trade", json={"count": 1, "res": rows})


def test_an_order_opened_and_closed_meanwhile_is_found_in_the_history(client, rsps) -> None:
    lost_reply_then_history(rsps)
    ack = client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert (ack.trade_id, ack.status) == ("41", "CLOSED")
    assert len(calls_to(rsps, "open_order")) == 1
    query = calls_to(rsps, "strategy_trade")[0].request.url
    assert "orderRef=mr-a-1" in query


def test_an_order_filling_while_it_is_looked_for_is_open_not_closed(client, rsps) -> None:
    """Seen under load against the simulator: the listings were read before the fill, the
    history after it. In the history but opened when listed again is FILLED, not CLOSED
    (a CLOSED ack would leave an open trade unmanaged)."""
    lost_reply_then_history(rsps, trade("41", "mr-a-1"))
    ack = client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert (ack.trade_id, ack.status) == ("41", "FILLED")
    assert len(calls_to(rsps, "open_order")) == 1
    names = [c.request.url.split("?")[0].rsplit("/", 1)[1] for c in rsps.calls]
    assert names.index("strategy_trade") < len(names) - 1 - names[::-1].index("opened_trades")


def test_forbidden_is_not_retried_with_a_new_token(client, rsps, server) -> None:
    rsps.get(f"{BASE}/balance", status=403, json={"err_msg": "account not available"})
    with pytest.raises(AuthError, match="HTTP 403"):
        client.balance()
    assert server.issued == 1 and len(calls_to(rsps, "balance")) == 1


def test_a_200_refusal_naming_the_token_renews_it(client, rsps, server) -> None:
    rsps.get(f"{BASE}/balance", json={"status": "FAIL", "err_msg": "Invalid session token"})
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    assert client.balance().nav == 1.0
    assert server.issued == 2


@pytest.mark.parametrize("message", ["market session closed", "outside trading session"])
def test_a_refusal_merely_mentioning_a_session_is_not_about_the_token(
    client, rsps, server, message
):
    rsps.post(f"{BASE}/open_order", json={"status": "FAIL", "err_msg": message})
    with pytest.raises(OrderRejected, match=message):
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert len(calls_to(rsps, "open_order")) == 1  # refused: not sent again
    assert server.issued == 1


@pytest.mark.parametrize("message", ["session expired", "Invalid session", "token revoked"])
def test_a_200_refusal_of_the_session_renews_the_token(client, rsps, server, message) -> None:
    rsps.get(f"{BASE}/balance", json={"status": "FAIL", "err_msg": message})
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    assert client.balance().nav == 1.0
    assert server.issued == 2


def test_a_missing_quote_is_a_rejection(client, rsps) -> None:
    rsps.get(f"{BASE}/realtime_price", json={"count": 0, "res": {}})
    with pytest.raises(RequestRejected, match="no quote for NOPE"):
        client.realtime_price("NOPE")


def test_bad_api_key_is_an_auth_error_from_session(clock, rsps) -> None:
    rsps.get(f"{BASE}/session", status=401, json={"err_msg": f"bad key {API_KEY}"})
    with make_client(clock) as c, pytest.raises(AuthError) as info:
        c.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert info.value.endpoint == "session"
    assert not calls_to(rsps, "open_order")
    assert_clean(info.value)


def test_session_unreachable_before_an_order_is_not_uncertain(clock, rsps) -> None:
    rsps.get(f"{BASE}/session", body=requests.ConnectionError("refused"))
    with make_client(clock) as c, pytest.raises(NetworkError) as info:
        c.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert not isinstance(info.value, OrderUncertain)
    assert not calls_to(rsps, "open_order")


@pytest.mark.parametrize("skew_s", [-3600.0, -30.0, 30.0, 3600.0])
def test_clock_skew_both_ways(clock, server, rsps, skew_s) -> None:
    """The server's clock is ``skew_s`` ahead of ours; its tokens live 120 s. We must use
    each one for about 120 s, whatever our own clock says."""
    server.skew_s, server.ttl_s = skew_s, 120.0
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    with make_client(clock, token_margin_s=5.0) as c:
        c.balance()
        clock.advance(110.0)  # well inside the token's life, on the server's clock
        c.balance()
        assert server.issued == 1
        clock.advance(6.0)  # 4 s before expiry: renewed (5 s margin, 1 s Date resolution)
        c.balance()
        assert server.issued == 2


def test_without_a_date_header_the_local_clock_is_trusted(clock, server, rsps) -> None:
    server.send_date, server.ttl_s = False, 120.0
    rsps.get(f"{BASE}/balance", json={"NAV": 1.0, "available_Balance": 1.0})
    with make_client(clock, token_margin_s=5.0) as c:
        c.balance()
        clock.advance(114.0)
        c.balance()
        assert server.issued == 1
        clock.advance(2.0)
        c.balance()
        assert server.issued == 2


# --- open_order reconciliation ------------------------------------------------------

AMBIGUOUS_FAILURES = [
    pytest.param({"body": requests.ReadTimeout("slow")}, id="timeout"),
    pytest.param({"body": requests.ConnectionError("dropped")}, id="dropped"),
    pytest.param({"status": 503, "json": {}}, id="5xx"),
    pytest.param({"body": '{"status": "PENDING_TO'}, id="malformed"),
    pytest.param({"json": {"status": "PENDING_TO_FILL"}}, id="missing-tradeID"),
]


@pytest.mark.parametrize("failure", AMBIGUOUS_FAILURES)
def test_found_after_an_ambiguous_failure_means_no_resend(client, rsps, failure) -> None:
    rsps.post(f"{BASE}/open_order", **failure)
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing())  # not filled yet...
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("11", "other"), trade("12", "mr-a-1")))
    ack = client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert ack == OrderAck("12", "FILLED", "2023-08-31 14:00:53.787035", "mr-a-1")
    assert len(calls_to(rsps, "open_order")) == 1


def test_found_pending_after_an_ambiguous_failure(client, rsps) -> None:
    rsps.post(f"{BASE}/open_order", body=requests.ReadTimeout("slow"))
    rsps.get(f"{BASE}/pending_trades", json=listing(trade("13", "mr-a-1", timeinforce=60)))
    rsps.get(f"{BASE}/opened_trades", json=listing())
    ack = client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1", ordertype="LMT", price=1.0)
    assert (ack.trade_id, ack.status) == ("13", "PENDING")
    assert len(calls_to(rsps, "open_order")) == 1


@pytest.mark.parametrize("failure", AMBIGUOUS_FAILURES)
def test_absent_after_the_window_is_uncertain_and_never_resent(client, rsps, clock, failure):
    """Issue 17 case 4: a server may execute an order late; absence proves nothing."""
    rsps.post(f"{BASE}/open_order", **failure)
    rsps.post(f"{BASE}/open_order", json=ACK)
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("11", "mr-a-other")))
    rsps.get(f"{BASE}/strategy_trade", json=listing())
    start = clock.mono
    with pytest.raises(OrderUncertain, match="never resent") as info:
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert len(calls_to(rsps, "open_order")) == 1
    assert clock.mono - start >= 5.0  # looked for it the whole reconcile window
    assert len(calls_to(rsps, "opened_trades")) >= 3
    assert calls_to(rsps, "strategy_trade")
    assert_clean(info.value)


def refused(message: str = "Connection refused") -> requests.ConnectionError:
    """What requests raises when no connection could be made (urllib3 2.x's shape)."""
    cause = urllib3.exceptions.NewConnectionError(None, message)  # type: ignore[arg-type]
    reason = urllib3.exceptions.MaxRetryError(None, "/rest/v1/open_order", cause)  # type: ignore[arg-type]
    return requests.ConnectionError(reason)


NEVER_CONNECTED = [
    pytest.param(refused(), id="refused"),
    pytest.param(requests.ConnectTimeout("connect timed out"), id="connect-timeout"),
    pytest.param(
        requests.ConnectionError(
            urllib3.exceptions.NameResolutionError("algo.test", None, OSError("no such host"))  # type: ignore[arg-type]
        ),
        id="dns",
    ),
]


@pytest.mark.parametrize("failure", NEVER_CONNECTED)
def test_an_order_that_never_connected_is_not_placed(client, rsps, clock, failure) -> None:
    """No connection, no byte sent: not placed, no search by orderRef, no uncertainty."""
    rsps.post(f"{BASE}/open_order", body=failure)
    start = clock.mono
    with pytest.raises(NotConnected, match="nothing sent") as info:
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert not isinstance(info.value, OrderUncertain)
    assert len(calls_to(rsps, "open_order")) == 1
    assert not calls_to(rsps, "opened_trades") and not calls_to(rsps, "pending_trades")
    assert clock.mono == start
    assert_clean(info.value)


def test_a_connection_error_chained_from_a_refusal_is_not_placed(client, rsps) -> None:
    error = requests.ConnectionError("refused")
    error.__cause__ = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    rsps.post(f"{BASE}/open_order", body=error)
    with pytest.raises(NotConnected):
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")


def test_a_resend_that_never_connected_stays_uncertain(client, rsps, clock) -> None:
    """After a refused token the first send may have executed: the resend's connect
    failure does not make the order "not placed"."""
    rsps.post(f"{BASE}/open_order", status=401, json={"status": "FAIL", "err_msg": "token"})
    rsps.post(f"{BASE}/open_order", body=refused())
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing())
    rsps.get(f"{BASE}/strategy_trade", json=listing())
    with pytest.raises(OrderUncertain):
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert len(calls_to(rsps, "open_order")) == 2


@pytest.mark.parametrize(
    "lookup",
    [requests.ConnectionError("down"), requests.ReadTimeout("slow")],
)
def test_unreachable_reconciliation_is_order_uncertain(client, rsps, clock, lookup) -> None:
    rsps.post(f"{BASE}/open_order", body=requests.ReadTimeout("slow"))
    rsps.get(f"{BASE}/pending_trades", body=lookup)
    rsps.get(f"{BASE}/opened_trades", body=lookup)
    with pytest.raises(OrderUncertain) as info:
        client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert len(calls_to(rsps, "open_order")) == 1
    assert "mr-a-1" in str(info.value) and "open_order" in str(info.value)
    assert_clean(info.value)


def test_reconciliation_tolerates_a_failed_lookup_inside_the_window(client, rsps) -> None:
    rsps.post(f"{BASE}/open_order", status=502)
    rsps.get(f"{BASE}/pending_trades", status=503)
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("21", "mr-a-1")))
    assert client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1").trade_id == "21"
    assert len(calls_to(rsps, "open_order")) == 1


def test_two_trades_with_our_ref_returns_the_first_and_warns(client, rsps, caplog) -> None:
    rsps.post(f"{BASE}/open_order", body=requests.ReadTimeout("slow"))
    rsps.get(f"{BASE}/pending_trades", json=listing())
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("31", "mr-a-1"), trade("32", "mr-a-1")))
    with caplog.at_level(logging.WARNING, logger="multirun.client"):
        ack = client.open_order("BTCUSD", "BUY", 1.0, "mr-a-1")
    assert ack.trade_id == "31"
    warnings = [r.getMessage() for r in caplog.records]
    warning = next(m for m in warnings if "carried by 2 trades" in m)
    assert "31" in warning and "32" in warning


# --- close_trades / cancel_orders ---------------------------------------------------


def test_close_confirms_through_opened_trades(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", json={"status": "SUCCESS", "res": "Submitted '1','2',"})
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1"), trade("2"), trade("3")))
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("3")))
    client.close_trades(["1", 2, "1"])
    (send,) = calls_to(rsps, "close_orders")
    assert body_of(send)["tradeIDs"] == "1,2"
    assert len(calls_to(rsps, "opened_trades")) == 2


FILLED = {"status": "FILLED", "tradeID": 1, "orderRef": "", "buysell": 1, "volume": 1.0}


def test_closing_an_already_closed_trade_is_success(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", status=404, json={"err_msg": "no open trade"})
    rsps.get(f"{BASE}/opened_trades", json=listing())
    rsps.get(f"{BASE}/query_order", json=FILLED)  # filled, and no longer open: closed
    client.close_trades(["1"])
    assert len(calls_to(rsps, "close_orders")) == 1
    assert len(calls_to(rsps, "query_order")) == 1


def test_closing_a_trade_the_server_does_not_know_is_success(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", status=404, json={"err_msg": "no open trade"})
    rsps.get(f"{BASE}/opened_trades", json=listing())
    rsps.get(f"{BASE}/query_order", status=404, json={"err_msg": "unknown tradeID"})
    client.close_trades(["1"])


def test_an_unfilled_market_order_is_closed_once_it_fills(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", status=404, json={"err_msg": "no open trade"})
    rsps.post(f"{BASE}/close_orders", json={"status": "SUCCESS", "res": "ok"})
    rsps.get(f"{BASE}/opened_trades", json=listing())  # not filled yet
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1")))  # filled: close it now
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1")))  # closing...
    rsps.get(f"{BASE}/opened_trades", json=listing())
    rsps.get(f"{BASE}/query_order", json={**FILLED, "status": "PENDING"})
    client.close_trades(["1"])
    assert len(calls_to(rsps, "close_orders")) == 2


def test_a_pending_limit_order_is_not_closed(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", status=404, json={"err_msg": "no open trade"})
    rsps.get(f"{BASE}/opened_trades", json=listing())
    rsps.get(f"{BASE}/query_order", json={**FILLED, "status": "PENDING"})
    with pytest.raises(CloseUnconfirmed, match="not filled"):
        client.close_trades(["1"], confirm_timeout_s=2.0)


def test_close_after_an_ambiguous_failure_checks_then_resends(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", body=requests.ReadTimeout("slow"))
    rsps.post(f"{BASE}/close_orders", json={"status": "SUCCESS", "res": "ok"})

    def opened(request: Any) -> tuple[int, dict[str, str], str]:
        # still open (the close was lost) until the close is sent again, however many
        # polls the confirmation makes meanwhile
        resent = len(calls_to(rsps, "close_orders")) >= 2
        return 200, {}, json.dumps(listing() if resent else listing(trade("1")))

    rsps.add_callback(responses.GET, f"{BASE}/opened_trades", callback=opened)
    client.close_trades("1")
    assert len(calls_to(rsps, "close_orders")) >= 2  # resent while listed, about once a second


def test_close_after_an_ambiguous_failure_that_did_close(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", status=504)
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1")))
    rsps.get(f"{BASE}/opened_trades", json=listing())
    client.close_trades(["1"])
    assert len(calls_to(rsps, "close_orders")) == 1


def test_close_unconfirmed_after_the_timeout(client, rsps, clock) -> None:
    rsps.post(f"{BASE}/close_orders", json={"status": "SUCCESS", "res": "ok"})
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1")))
    start = clock.mono
    with pytest.raises(CloseUnconfirmed) as info:
        client.close_trades(["1"], confirm_timeout_s=3.0)
    assert 3.0 <= clock.mono - start < 4.0
    assert "1" in str(info.value)
    assert_clean(info.value)


def test_a_listing_unread_at_the_deadline_gets_one_more_read(client, rsps, clock) -> None:
    rsps.post(f"{BASE}/close_orders", json={"status": "SUCCESS", "res": "ok"})
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1")))

    def held_reply(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        clock.advance(10.0)  # the reply is held past the read timeout, past the deadline
        raise requests.ReadTimeout("held")

    rsps.add_callback(responses.GET, f"{BASE}/opened_trades", callback=held_reply)
    rsps.get(f"{BASE}/opened_trades", json=listing())  # closed all along
    client.close_trades(["1"], confirm_timeout_s=10.0)
    assert len(calls_to(rsps, "close_orders")) == 1


def test_a_close_whose_reply_is_held_past_the_deadline_gets_one_more_round(
    client, rsps, clock
) -> None:
    def held_refusal(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        clock.advance(10.0)  # e.g. refused (not filled yet), and the reply held back
        raise requests.ReadTimeout("held")

    def opened(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        closed = len(calls_to(rsps, "close_orders")) >= 2  # only the second close acts
        return 200, {}, json.dumps(listing() if closed else listing(trade("1")))

    rsps.add_callback(responses.POST, f"{BASE}/close_orders", callback=held_refusal)
    rsps.post(f"{BASE}/close_orders", json={"status": "SUCCESS", "res": "ok"})
    rsps.add_callback(responses.GET, f"{BASE}/opened_trades", callback=opened)
    client.close_trades(["1"], confirm_timeout_s=10.0)
    assert len(calls_to(rsps, "close_orders")) == 2


def test_close_refused_for_an_open_trade_raises(client, rsps) -> None:
    rsps.post(f"{BASE}/close_orders", status=400, json={"err_msg": "market closed"})
    rsps.get(f"{BASE}/opened_trades", json=listing(trade("1")))
    with pytest.raises(OrderRejected, match="market closed"):
        client.close_trades(["1"])


def test_close_nothing_sends_nothing(client, rsps) -> None:
    client.close_trades([])
    assert not rsps.calls


def test_cancel_confirms_through_pending_trades(client, rsps) -> None:
    rsps.post(f"{BASE}/cancel_orders", json={"status": "SUCCESS", "res": "BULK_CANCEL"})
    rsps.get(f"{BASE}/pending_trades", json=listing())
    client.cancel_orders(["5"])
    assert body_of(calls_to(rsps, "cancel_orders")[0])["tradeIDs"] == "5"


def test_cancel_of_a_gone_order_is_success(client, rsps) -> None:
    rsps.post(f"{BASE}/cancel_orders", status=404, json={"err_msg": "no pending order"})
    rsps.get(f"{BASE}/pending_trades", json=listing())
    client.cancel_orders(["5"])


def test_repr_and_errors_never_show_the_key(client) -> None:
    assert API_KEY not in repr(client) and API_KEY not in str(vars(client).get("_api_key"))


def test_proxy_and_ca_settings_are_read_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/our-ca.pem")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = http_session("https://api.test/rest/v1")
    assert session.proxies.get("https") == "http://proxy.test:3128"
    assert session.verify == "/etc/ssl/our-ca.pem"
    assert session.trust_env is False  # not re-read (an os.environ scan) per request
    monkeypatch.setenv("NO_PROXY", "api.test")
    assert "https" not in http_session("https://api.test/rest/v1").proxies
