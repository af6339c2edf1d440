"""50 concurrent clients: every order lands in the ledger exactly once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import SimCaller, wait_until

CLIENTS = 50
ORDERS_EACH = 4


def client(sim, index: int, start: threading.Barrier) -> list[str]:
    caller = SimCaller(sim, user=f"user-{index % 5}", accountid=f"ACC-{index}")
    start.wait()
    caller.login()
    ids = []
    for n in range(ORDERS_EACH):
        ids.append(caller.open(volume=0.01, orderRef=f"c{index}-{n}"))
        caller.ok("GET", "opened_trades")
    return ids


@pytest.mark.slow
def test_fifty_concurrent_clients_lose_and_duplicate_nothing(sim) -> None:
    start = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, sim, i, start) for i in range(CLIENTS)]
        acked = [tid for f in futures for tid in f.result(timeout=60)]
    ledger = sim.ledger()
    assert len(acked) == len(set(acked)) == CLIENTS * ORDERS_EACH
    assert sorted(str(o["tradeID"]) for o in ledger) == sorted(acked)
    refs = sorted(o["orderRef"] for o in ledger)
    assert refs == sorted(f"c{i}-{n}" for i in range(CLIENTS) for n in range(ORDERS_EACH))
    for order in ledger:
        assert order["accountid"] == f"ACC-{order['orderRef'][1:].split('-')[0]}"
    wait_until(lambda: all(o["status"] == "OPEN" for o in sim.ledger()), timeout=10)
    assert sim.stats()["requests"]["open_order"] == CLIENTS * ORDERS_EACH
