"""The simulator as ALGOGENE's own published clients call it, over a real socket.

:class:`PublishedClient` sends exactly what ALGOGENE's Python wrapper (public repository
algogene-fintech/rest_api, ``src/python/api.py``) sends: every GET with its parameters in
the query string and a ``Content-Type: application/json`` header, every POST as a JSON
body (``json=``), the same parameter names, the same ``str``/``float``/``int`` conversions,
optional parameters left out, and the reporting calls (``/strategy_*``) with ``user``,
``api_key``, ``runmode`` and ``runtime_id`` alone: no token. The calls the wrapper lacks
(``query_order``, ``strategy_cashflow``, ``strategy_logs``) are sent as ALGOGENE's MCP
package (PyPI ``algogene-mcp-server`` 0.1.8, ``utils._request``) sends them: the same
transport. Replies are checked against ``shared/algogene-api.md``'s shapes, and the
account-history calls against the account's real state.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from multirun.sim import SimServer
from tests.conftest import SimFactory

JSON_HEADERS = {"Content-Type": "application/json"}
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
TRADE_FIELDS = {
    "broker", "buysell", "channel", "expiry", "holdtime", "instrument", "market", "openclose",
    "order_Ref", "price", "product_type", "right", "stopLossLevel", "strike", "symbol",
    "takeProfitLevel", "timestamp", "trade_ID", "unrealizedPL", "volume",
}  # fmt: skip
QUERY_FIELDS = {
    "status", "err_msg", "tradeID", "orderRef", "buysell", "price", "volume", "timestamp",
    "takeProfitLevel", "stopLossLevel", "holdtime", "trailingstop", "timeinforce",
    "instrument", "symbol", "expiry", "right", "strike",
}  # fmt: skip
BALANCE_FIELDS = {"NAV", "available_Balance", "margin_Used", "realized_PL", "unrealized_PL"}


class PublishedClient:
    """ALGOGENE's published Python client's call shapes (no retries, no token handling
    beyond what it does: one ``/session`` before the first account call)."""

    def __init__(self, base_url: str, user: str, api_key: str) -> None:
        self.base = base_url + "/"
        self.user, self.api_key = str(user), str(api_key)
        self.token = ""

    def _creds(self) -> dict[str, Any]:
        return {"user": self.user, "api_key": self.api_key}

    def _get(self, endpoint: str, data: dict[str, Any]) -> tuple[int, Any]:
        reply = requests.request(
            "get", self.base + endpoint, params=data, headers=JSON_HEADERS, timeout=10
        )
        return reply.status_code, reply.json()

    def _post(self, endpoint: str, data: dict[str, Any]) -> tuple[int, Any]:
        reply = requests.request(
            "post", self.base + endpoint, json=data, headers=JSON_HEADERS, timeout=10
        )
        return reply.status_code, reply.json()

    def _account(self, runmode: str, accountid: str, **extra: Any) -> dict[str, Any]:
        if not self.token:
            self.session()
        base = {**self._creds(), "token": self.token, "runmode": str(runmode)}
        return {**base, "accountid": str(accountid), **extra}

    # --- the wrapper's calls ---------------------------------------------------

    def session(self) -> tuple[int, Any]:
        status, body = self._get("session", self._creds())
        if status == 200:
            self.token = str(body["res"]["token"])
            datetime.strptime(str(body["res"]["expired_utc"]), TS_FORMAT)  # as it parses it
        return status, body

    def accounts(self, runmode: str) -> tuple[int, Any]:
        if not self.token:
            self.session()
        data = {**self._creds(), "runmode": str(runmode), "token": self.token}
        return self._get("accounts", data)

    def positions(self, runmode: str, accountid: str) -> tuple[int, Any]:
        return self._get("positions", self._account(runmode, accountid))

    def balance(self, runmode: str, accountid: str) -> tuple[int, Any]:
        return self._get("balance", self._account(runmode, accountid))

    def opened_trades(self, runmode: str, accountid: str) -> tuple[int, Any]:
        return self._get("opened_trades", self._account(runmode, accountid))

    def pending_trades(self, runmode: str, accountid: str) -> tuple[int, Any]:
        return self._get("pending_trades", self._account(runmode, accountid))

    def close_orders(self, runmode: str, accountid: str, tradeIDs: Any) -> tuple[int, Any]:
        data = self._account(runmode, accountid, tradeIDs=str(tradeIDs))
        return self._post("close_orders", data)

    def cancel_orders(self, runmode: str, accountid: str, tradeIDs: Any) -> tuple[int, Any]:
        data = self._account(runmode, accountid, tradeIDs=str(tradeIDs))
        return self._post("cancel_orders", data)

    def update_opened_order(
        self, runmode: str, accountid: str, tradeID: Any, **changes: Any
    ) -> tuple[int, Any]:
        data = self._account(runmode, accountid, tradeID=str(tradeID))
        data.update(_typed(changes))
        return self._post("update_opened_order", data)

    def update_pending_order(
        self, runmode: str, accountid: str, tradeID: Any, **changes: Any
    ) -> tuple[int, Any]:
        data = self._account(runmode, accountid, tradeID=str(tradeID))
        data.update(_typed(changes))
        return self._post("update_pending_order", data)

    def open_order(
        self, runmode: str, accountid: str, instrument: str, **order: Any
    ) -> tuple[int, Any]:
        data = self._account(runmode, accountid, instrument=str(instrument))
        data.update(_typed(order))
        return self._post("open_order", data)

    def history_price(
        self, instrument: str, count: int, interval: str, timestamp: str
    ) -> tuple[int, Any]:
        data = {**self._creds(), "instrument": str(instrument), "count": int(count)}
        data.update(interval=str(interval), timestamp=str(timestamp))
        return self._get("history_price", data)

    def list_instrument(self) -> tuple[int, Any]:
        return self._get("list_instrument", self._creds())

    def meta_instrument(self, instrument: str) -> tuple[int, Any]:
        return self._get("meta_instrument", {**self._creds(), "instrument": str(instrument)})

    def realtime_price(self, symbols: str) -> tuple[int, Any]:
        return self._get("realtime_price", {**self._creds(), "symbols": str(symbols)})

    def strategy(self, name: str, runmode: str, runtime_id: str, acdate: str = "") -> Any:
        """``strategy_stats``, ``_pl``, ``_pos``, ``_bal``, ``_trade``: no token."""
        data = {**self._creds(), "runmode": str(runmode), "runtime_id": str(runtime_id)}
        if acdate != "":
            data["acdate"] = str(acdate)
        return self._get(f"strategy_{name}", data)

    # --- the MCP package's calls (its transport: user/api_key merged in, same header) ---

    def mcp_query_order(self, runmode: str, accountid: str, tradeID: Any) -> tuple[int, Any]:
        return self._get("query_order", self._account(runmode, accountid, tradeID=str(tradeID)))

    def mcp_strategy(self, name: str, runmode: str, runtime_id: str, **extra: str) -> Any:
        """``strategy_trade`` (``acdate`` always sent, ``orderRef`` if given),
        ``strategy_cashflow``, ``strategy_logs``: no token."""
        data = {**self._creds(), "runmode": str(runmode), "runtime_id": str(runtime_id)}
        return self._get(f"strategy_{name}", {**data, **extra})


def _typed(fields: dict[str, Any]) -> dict[str, Any]:
    """The wrapper's conversions: levels and prices float, holdtime and timeinforce int."""
    ints = {"holdtime", "timeinforce"}
    floats = {"takeProfitLevel", "stopLossLevel", "price", "volume", "strike"}
    return {
        k: int(v) if k in ints else float(v) if k in floats else str(v) for k, v in fields.items()
    }


def _ok(reply: tuple[int, Any]) -> Any:
    status, body = reply
    assert status == 200, body
    return body


def _exact(value: object) -> Decimal:
    """A JSON number as the decimal it prints as (what a reader adds up)."""
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return Decimal(repr(value))


RUN, ACC = "livetest", "ACC-7"


@pytest.fixture
def client(sim: SimServer) -> PublishedClient:
    return PublishedClient(sim.base_url, "alice", "alice-key")


def _fill(sim: SimServer) -> None:
    sim.advance(1)  # past the fill (and close) delay, on the simulator's clock


def test_every_documented_endpoint_answers_the_published_client(
    sim: SimServer, client: PublishedClient
) -> None:
    session = _ok(client.session())
    assert set(session["res"]) == {"token", "expired_utc"}

    closed = _ok(client.open_order(RUN, ACC, "BTCUSD", buysell="BUY", volume=0.5, ordertype="MKT"))
    assert set(closed) == {"status", "timestamp_utc", "tradeID"} and closed["status"] == (
        "PENDING_TO_FILL"
    )
    assert isinstance(closed["tradeID"], int)
    kept = _ok(
        client.open_order(
            RUN, ACC, "EURUSD", buysell="SELL", volume=1, ordertype="MKT", orderRef="keep",
            stopLossLevel=99, holdtime=86_400 * 30,
        )
    )["tradeID"]  # fmt: skip
    waiting = _ok(
        client.open_order(
            RUN, ACC, "BTCUSD", buysell="BUY", volume=0.01, ordertype="LMT", price=1,
            timeinforce=86_400 * 30,
        )
    )["tradeID"]  # fmt: skip
    _fill(sim)

    query = _ok(client.mcp_query_order(RUN, ACC, closed["tradeID"]))
    assert set(query) == QUERY_FIELDS and query["status"] == "FILLED"
    opened = _ok(client.opened_trades(RUN, ACC))
    assert opened["count"] == 2 and all(set(t) == TRADE_FIELDS for t in opened["res"])
    pending = _ok(client.pending_trades(RUN, ACC))
    assert [t["trade_ID"] for t in pending["res"]] == [str(waiting)]
    assert set(pending["res"][0]) == TRADE_FIELDS | {"timeinforce"}

    assert _ok(client.update_opened_order(RUN, ACC, kept, takeProfitLevel=0.5)) == {
        "status": "SUCCESS",
        "res": "Submitted for order update!",
    }
    assert _ok(client.update_pending_order(RUN, ACC, waiting, price=2, timeinforce=600)) == {
        "status": "SUCCESS",
        "res": "Submitted for pending order update!",
    }
    assert _ok(client.close_orders(RUN, ACC, closed["tradeID"])) == {
        "status": "SUCCESS",
        "res": f"Submitted close order request for '{closed['tradeID']}',",
    }
    _fill(sim)
    second_pending = _ok(
        client.open_order(RUN, ACC, "BTCUSD", buysell="BUY", volume=0.01, ordertype="LMT", price=1)
    )["tradeID"]
    both = f"{waiting},{second_pending}"  # the wrapper's comma-separated list
    assert _ok(client.cancel_orders(RUN, ACC, both)) == {
        "status": "SUCCESS",
        "res": "Submitted for BULK_CANCEL",
    }

    accounts = _ok(client.accounts(RUN))
    assert [a["accountid"] for a in accounts["res"]] == [ACC] and accounts["count"] == 1
    balance = _ok(client.balance(RUN, ACC))["res"]
    assert set(balance) == BALANCE_FIELDS | {"timestamp", "BaseCurrency"}
    positions = _ok(client.positions(RUN, ACC))
    assert set(positions["res"]) == {"EURUSD"} and positions["count"] == 1
    assert set(positions["res"]["EURUSD"]) == {
        "LastTradeTime",
        "MarketValue",
        "Position",
        "netVolume",
    }

    prices = _ok(client.realtime_price("BTCUSD,EURUSD"))
    assert prices["count"] == 2 and set(prices["res"]["BTCUSD"]) == {
        "timestamp", "bidPrice", "askPrice", "bidSize", "askSize", "bidOrderBook", "askOrderBook",
    }  # fmt: skip
    bars = _ok(client.history_price("USDJPY", 5, "D", "2020-10-30 00:00:00"))
    assert bars["count"] == 5 and set(bars["res"][0]) == set("tohlcbamv")
    instruments = _ok(client.list_instrument())
    assert instruments["res"] == sorted(instruments["res"]) and "BTCUSD" in instruments["res"]
    meta = _ok(client.meta_instrument("USDJPY"))["res"]
    assert {"contractSize", "market", "producttype", "settleCurrency", "description"} <= set(meta)

    _check_history(client, closed["tradeID"], kept, balance, positions["res"])


def _check_history(
    client: PublishedClient,
    closed: int,
    kept: int,
    balance: dict[str, Any],
    positions: dict[str, Any],
) -> None:
    """The account-history calls, without a token, show the account's real state."""
    today = balance["timestamp"][:10]
    trades = _ok(client.strategy("trade", RUN, ACC, acdate=today))
    assert [(r["trade_ID"], r["openclose"]) for r in trades["res"]] == [
        (str(closed), "open"),
        (str(kept), "open"),
        (str(closed), "close"),
    ]
    assert {"trade_ID", "price", "volume", "timestamp", "order_ref"} <= set(trades["res"][0])
    by_ref = _ok(client.mcp_strategy("trade", RUN, ACC, acdate="", orderRef="keep"))
    assert [r["trade_ID"] for r in by_ref["res"]] == [str(kept)]
    realized = _exact(trades["res"][2]["realizedPL"])

    pl = _ok(client.strategy("pl", RUN, ACC))
    assert pl["res"] == [{"Acdate": today, "TotalPL": float(realized), "BTCUSD": float(realized)}]
    stats = _ok(client.strategy("stats", RUN, ACC))
    assert set(stats) == {"settings", "performance"}
    assert {"strategyName", "BaseCurrency"} <= set(stats["settings"])
    assert {"TotalPnL", "AnnualSharpe", "TradeCnt"} <= set(stats["performance"])
    assert stats["performance"]["TradeCnt"] == 2
    assert _exact(stats["performance"]["RealizedPnL"]) == realized

    pos = _ok(client.strategy("pos", RUN, ACC))
    assert pos["count"] == 1
    assert pos["res"][0] == {"Acdate": today, "BTCUSD": 0.0, "EURUSD": -1.0}
    assert pos["res"][0]["EURUSD"] == positions["EURUSD"]["netVolume"]

    bal = _ok(client.strategy("bal", RUN, ACC))
    assert bal["count"] == 1 and bal["res"][0]["Acdate"] == today
    assert set(bal["res"][0]) == {"Acdate", "BaseCurrency"} | BALANCE_FIELDS
    assert bal["res"][0]["realized_PL"] == balance["realized_PL"] == float(realized)
    assert abs(bal["res"][0]["NAV"] - balance["NAV"]) < 50  # EURUSD moved a little since

    cash = _ok(client.mcp_strategy("cashflow", RUN, ACC))
    assert cash["count"] == 1
    assert {k: cash["res"][0][k] for k in ("Acdate", "Cash_flow", "Event")} == {
        "Acdate": today,
        "Cash_flow": 1_000_000.0,
        "Event": "Deposit",
    }
    logs = _ok(client.mcp_strategy("logs", RUN, ACC))
    assert isinstance(logs["res"], str) and logs["count"] == len(logs["res"].splitlines())
    assert f"trade {closed} closed at" in logs["res"]
    assert f"order {kept} filled at" in logs["res"]
    assert logs["res"].splitlines()[-1].endswith("cancelled by request")


@pytest.mark.parametrize("endpoint", ["trade", "pl", "pos", "bal", "cashflow", "stats", "logs"])
def test_reporting_calls_still_refuse_a_bad_key_or_token(
    sim_factory: SimFactory, endpoint: str
) -> None:
    users = [{"user": "alice", "api_key": "alice-key", "accounts": {RUN: [ACC]}}]
    sim = sim_factory(accounts={"users": users})
    client = PublishedClient(sim.base_url, "alice", "alice-key")
    assert _ok(client.mcp_strategy(endpoint, RUN, ACC)) is not None  # no token: fine
    assert client.mcp_strategy(endpoint, RUN, "ACC-8")[0] == 403  # not her account
    status, body = client.mcp_strategy(endpoint, RUN, ACC, token="forged")  # checked if sent
    assert status == 401 and body["err_msg"] == "invalid token"
    client.api_key = "wrong"
    status, body = client.mcp_strategy(endpoint, RUN, ACC)
    assert status == 401 and body["err_msg"] == "invalid user or api_key"


def test_the_account_history_over_days(sim_factory: SimFactory) -> None:
    """Days without a close still have a balance and a positions record; past days' are
    valued at their end and do not change."""
    sim = sim_factory(token_ttl_s=1e9)  # days pass on the simulator's clock
    client = PublishedClient(sim.base_url, "alice", "alice-key")
    _ok(client.open_order(RUN, ACC, "ETHUSD", buysell="BUY", volume=2, ordertype="MKT"))
    _fill(sim)
    first = _ok(client.strategy("bal", RUN, ACC))["res"]
    sim.advance(2 * 86_400)
    days = _ok(client.strategy("bal", RUN, ACC))["res"]
    assert len(days) == 3 and days[0]["Acdate"] == first[0]["Acdate"]
    assert days[0]["realized_PL"] == 0.0 and days[0]["margin_Used"] > 0
    assert days[:2] == _ok(client.strategy("bal", RUN, ACC))["res"][:2]  # past days are fixed
    assert _ok(client.strategy("bal", RUN, ACC, acdate=days[1]["Acdate"]))["res"] == [days[1]]
    pos = _ok(client.strategy("pos", RUN, ACC))["res"]
    assert [r["ETHUSD"] for r in pos] == [2.0, 2.0, 2.0]
    assert _ok(client.strategy("bal", RUN, ACC, acdate="2001-01-01"))["res"] == []
    assert _ok(client.mcp_strategy("cashflow", RUN, ACC, acdate=days[2]["Acdate"]))["res"] == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_totals_equal_the_sum_of_the_rounded_trades(sim_factory: SimFactory, seed: int) -> None:
    """Many random trades over several days: every total the API shows equals, exactly,
    the sum of the per-trade realizedPL that /strategy_trade lists."""
    sim = sim_factory(seed=seed, fill_delay_ms=0, token_ttl_s=1e9)  # days pass
    client = PublishedClient(sim.base_url, "alice", "alice-key")
    rng = random.Random(seed)
    instruments = ["BTCUSD", "ETHUSD", "EURUSD", "USDJPY", "XAUUSD", "ZARJPY", "AAPL"]
    for _ in range(4):  # days
        for _ in range(15):
            order = {
                "buysell": rng.choice(["BUY", "SELL"]),
                "volume": rng.choice([0.01, 0.03, 0.1, 0.37, 1]),
                "ordertype": "MKT",
                "holdtime": rng.randrange(1, 7200),
            }
            _ok(client.open_order(RUN, ACC, rng.choice(instruments), **order))
            sim.advance(rng.uniform(0, 600))
        sim.advance(86_400)  # every holdtime has passed: all closed
    trades = _ok(client.strategy("trade", RUN, ACC))["res"]
    closes = [r for r in trades if r["openclose"] == "close"]
    assert len(closes) == 60
    cent = Decimal("0.01")
    assert all(_exact(r["realizedPL"]) == _exact(r["realizedPL"]).quantize(cent) for r in closes)
    total = sum((_exact(r["realizedPL"]) for r in closes), Decimal(0))
    per_day: dict[str, Decimal] = defaultdict(Decimal)
    per_instrument: dict[str, Decimal] = defaultdict(Decimal)
    for row in closes:
        per_day[row["timestamp"][:10]] += _exact(row["realizedPL"])
        per_instrument[row["instrument"]] += _exact(row["realizedPL"])

    assert _exact(_ok(client.balance(RUN, ACC))["res"]["realized_PL"]) == total
    assert _exact(_ok(client.accounts(RUN))["res"][0]["realizedPL"]) == total
    performance = _ok(client.strategy("stats", RUN, ACC))["performance"]
    assert _exact(performance["RealizedPnL"]) == _exact(performance["TotalPnL"]) == total
    records = _ok(client.strategy("pl", RUN, ACC))["res"]
    cumulative = Decimal(0)
    for record in records:
        cumulative += per_day[record["Acdate"]]
        assert _exact(record["TotalPL"]) == cumulative
    assert cumulative == total
    assert {k: _exact(records[-1][k]) for k in per_instrument} == dict(per_instrument)
    balance = _ok(client.strategy("bal", RUN, ACC))["res"][-1]
    assert _exact(balance["realized_PL"]) == total
    assert _exact(balance["NAV"]) == Decimal(1_000_000) + total  # nothing open any more
