"""The seed script's calls, made exactly as it makes them, get the seed's reply shapes."""

from __future__ import annotations

import json
import re

import requests

from tests.conftest import wait_until

TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")

TRADE_FIELDS = {
    "broker": str,
    "buysell": int,
    "channel": str,
    "expiry": str,
    "holdtime": float,
    "instrument": str,
    "market": str,
    "openclose": str,
    "order_Ref": str,
    "price": float,
    "product_type": str,
    "right": str,
    "stopLossLevel": float,
    "strike": float,
    "symbol": str,
    "takeProfitLevel": float,
    "timestamp": str,
    "trade_ID": str,
    "unrealizedPL": float,
    "volume": float,
}


class SeedScript:
    """ALGOGENE's example script, verbatim but for base_url and credentials."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.api_key, self.user = "YOUR_API_KEY", "YOUR_USER_ID"
        self.runmode, self.accountid = "livetest", "YOUR_ACCOUNT_ID"
        self.token = ""

    def get_session_token(self) -> dict:
        data = {"api_key": self.api_key, "user": self.user}
        return requests.get(self.base_url + "/session", params=data).json()

    def open_order(self, instrument: str, buysell: str, volume: float, orderRef: str = "") -> dict:
        data = {
            "api_key": self.api_key,
            "user": self.user,
            "runmode": self.runmode,
            "accountid": self.accountid,
            "instrument": instrument,
            "buysell": buysell,
            "volume": volume,
            "orderRef": orderRef,
            "ordertype": "MKT",
            "token": self.token,
        }
        return requests.post(self.base_url + "/open_order", data=json.dumps(data)).json()

    def close_order(self, tradeID: int) -> dict:
        data = {
            "api_key": self.api_key,
            "user": self.user,
            "runmode": self.runmode,
            "accountid": self.accountid,
            "tradeIDs": tradeID,
            "token": self.token,
        }
        return requests.post(self.base_url + "/close_orders", data=json.dumps(data)).json()

    def query_order(self, tradeID: int) -> dict:
        data = {
            "api_key": self.api_key,
            "user": self.user,
            "runmode": self.runmode,
            "accountid": self.accountid,
            "tradeID": tradeID,
            "token": self.token,
        }
        return requests.get(self.base_url + "/opened_trades", params=data).json()


def test_the_seed_flow_works_and_replies_have_the_seed_shapes(sim) -> None:
    seed = SeedScript(sim.base_url)
    res = seed.get_session_token()
    assert set(res["res"]) == {"token", "expired_utc"}
    assert TS.match(res["res"]["expired_utc"])
    seed.token = res["res"]["token"]

    for buysell in ("BUY", "SELL"):
        opened = seed.open_order(instrument="BTCUSD", buysell=buysell, volume=1)
        assert set(opened) == {"status", "timestamp_utc", "tradeID"}
        assert opened["status"] == "PENDING_TO_FILL"
        assert isinstance(opened["tradeID"], int)
        assert TS.match(opened["timestamp_utc"])
        trade_id = opened["tradeID"]

        listing = wait_until(
            lambda tid=trade_id: seed.query_order(tid)["count"] == 1 and seed.query_order(tid)
        )
        assert set(listing) == {"count", "res"}
        trade = listing["res"][0]
        assert set(trade) == set(TRADE_FIELDS)
        for name, kind in TRADE_FIELDS.items():
            assert isinstance(trade[name], kind), (name, trade[name])
        assert trade["trade_ID"] == str(trade_id)
        assert trade["buysell"] == (1 if buysell == "BUY" else -1)
        assert (trade["broker"], trade["channel"], trade["market"]) == ("ALGOGENE", "api", "CRYPTO")
        assert (trade["openclose"], trade["product_type"], trade["symbol"]) == (
            "open",
            "SPOT",
            "BTCUSD",
        )
        assert trade["volume"] == 1.0 and trade["order_Ref"] == ""
        assert trade["unrealizedPL"] < 0  # marked at the closing side of the spread
        assert TS.match(trade["timestamp"])

        closed = seed.close_order(trade_id)
        assert closed == {
            "status": "SUCCESS",
            "res": f"Submitted close order request for '{trade_id}',",
        }
        wait_until(lambda tid=trade_id: seed.query_order(tid)["count"] == 0)


def test_seed_tokens_compare_as_the_script_compares_them(sim) -> None:
    """The script renews when str(datetime.utcnow()) > expired_utc: same format, so it works."""
    seed = SeedScript(sim.base_url)
    expired = seed.get_session_token()["res"]["expired_utc"]
    assert len(expired) == 26 and expired > "2000-01-01 00:00:00.000000"
