"""The fair baseline: ALGOGENE's example loop by hand, doing what a multirun trading tick does.

    python bench/seedplus.py BASE_URL USER API_KEY ACCOUNTID INTERVAL_S JOURNAL [SEED]

The seed script (shared/seeds) confirms nothing and journals nothing, so "as cheap as the
seed" would mean dropping guarantees. This is the loop a careful person would write in
the seed's own style (one ``requests.Session``, module-level functions, a plain
``while True``) to get multirun's guarantees for the same strategy (close what is held,
then BUY, SELL or nothing, 2 draws in 3), and nothing more. Every round:

1. close the trade held: journal ``CLOSING`` (committed, fsync) *before* sending,
   ``/close_orders``, confirm it gone from ``/opened_trades`` (polled until absent), read
   ``/strategy_trade`` for the exact P&L of its close, journal ``CLOSED`` with it
   (committed);
2. draw a side; open: journal the intent with its orderRef (committed, fsync) *before*
   sending, ``/open_order`` carrying that orderRef, journal the trade id (committed),
   confirm the fill in ``/opened_trades`` (polled until listed), journal its price
   (committed).

The journal is SQLite in WAL mode, with multirun's durability: the two writes that
protect an order (the intent, the close request) are committed at ``synchronous=FULL``
(on disk before the request leaves), the others at ``NORMAL`` (a killed process keeps
them; a power cut may lose them, and a restart would ask the server). The session token is
renewed when it expires. Polls: first after 20 ms, then every 10 ms (the simulator's
fills take 20 ms). Between rounds it sleeps until the next one is due (the seed's
``sleep(1)`` would space rounds up to a second late, and so run fewer of them).
Shortcuts it does NOT take: no write is skipped, no fill or close is
assumed, the P&L is read, not computed. Things it does not do that multirun does: no
start-up reconciliation, no sync of the listings before each round, no lookup of a lost
order by orderRef, no status file, heartbeat, guardrails or retries. Prints ``up`` once
imported and ``round`` after each round (bench/deployed_cpu.py waits on them).
"""

import json
import random
import sqlite3
import sys
from datetime import datetime, timedelta
from time import sleep
from typing import Any

import requests

base_url, user, api_key, accountid, interval_arg, journal_path = sys.argv[1:7]
interval = float(interval_arg)
runmode = "livetest"
rng = random.Random(int(sys.argv[7]) if len(sys.argv) > 7 else None)
http = requests.Session()
db = sqlite3.connect(journal_path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute(
    "CREATE TABLE IF NOT EXISTS orders (ref TEXT PRIMARY KEY, side TEXT, volume REAL,"
    " state TEXT, trade_id TEXT, open_price REAL, close_price REAL, pnl REAL)"
)
print("up", flush=True)


def journal(sql: str, *args: object, durable: bool = False) -> None:
    # durable: on disk (fsync) before the next line runs; else in the OS's hands
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(sql, args)


def get_session_token() -> Any:
    data = {"api_key": api_key, "user": user}
    return http.get(base_url + "/session", params=data, timeout=10).json()


def open_order(instrument: str, buysell: str, volume: float, orderRef: str) -> Any:
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "instrument": instrument, "buysell": buysell, "volume": volume,
            "orderRef": orderRef, "ordertype": "MKT", "token": token}  # fmt: skip
    return http.post(base_url + "/open_order", data=json.dumps(data), timeout=10).json()


def close_order(tradeID: str) -> Any:
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "tradeIDs": tradeID, "token": token}  # fmt: skip
    return http.post(base_url + "/close_orders", data=json.dumps(data), timeout=10).json()


def query_order(tradeID: str) -> Any:
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "tradeID": tradeID, "token": token}  # fmt: skip
    return http.get(base_url + "/opened_trades", params=data, timeout=10).json()


def history(orderRef: str) -> Any:
    data = {"api_key": api_key, "user": user, "runmode": runmode, "accountid": accountid,
            "acdate": "", "runtime_id": accountid, "orderRef": orderRef,
            "token": token}  # fmt: skip
    return http.get(base_url + "/strategy_trade", params=data, timeout=10).json()


def await_listing(tradeID: str, listed: bool) -> Any:
    """Poll /opened_trades until the trade is listed (a fill) or gone (a close)."""
    sleep(0.02)
    for _ in range(500):
        res = query_order(tradeID)
        if (res.get("count", 0) > 0) == listed:
            return res
        sleep(0.01)
    raise SystemExit(f"seedplus: trade {tradeID} never {'listed' if listed else 'gone'}")


token, token_expiry = "", ""
tradeID, ref, seq = "", "", 0
dt = datetime.utcnow() - timedelta(minutes=60)
while True:
    if datetime.utcnow() >= dt + timedelta(seconds=interval):
        dt = datetime.utcnow()
        if str(dt) > token_expiry:
            res = get_session_token()
            token = res["res"]["token"]
            token_expiry = res["res"]["expired_utc"]
        if tradeID != "":
            journal("UPDATE orders SET state='CLOSING' WHERE ref=?", ref, durable=True)
            res = close_order(tradeID)
            if res.get("status") != "SUCCESS":
                raise SystemExit(f"seedplus: close refused: {res}")
            await_listing(tradeID, listed=False)
            rows = [r for r in history(ref)["res"] if r.get("openclose") == "close"]
            if not rows:
                raise SystemExit(f"seedplus: no close of {ref} in the history")
            journal("UPDATE orders SET state='CLOSED', close_price=?, pnl=? WHERE ref=?",
                    rows[-1]["price"], rows[-1]["realizedPL"], ref)  # fmt: skip
            tradeID = ""
        buysell = rng.choice(["BUY", "SELL", ""])
        if buysell != "":
            seq += 1
            ref = f"sp-{user}-{seq}"
            journal("INSERT INTO orders (ref, side, volume, state) VALUES (?, ?, 1, 'INTENT')",
                    ref, buysell, durable=True)  # fmt: skip
            res = open_order(instrument="BTCUSD", buysell=buysell, volume=1, orderRef=ref)
            if "tradeID" not in res:
                raise SystemExit(f"seedplus: open refused: {res}")
            tradeID = str(res["tradeID"])
            journal("UPDATE orders SET state='OPEN', trade_id=? WHERE ref=?", tradeID, ref)
            fill = await_listing(tradeID, listed=True)
            journal("UPDATE orders SET open_price=? WHERE ref=?", fill["res"][0]["price"], ref)
        print("round", flush=True)
    sleep(max(0.0, (dt + timedelta(seconds=interval) - datetime.utcnow()).total_seconds()))
