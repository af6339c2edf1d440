"""A close confirmed by its orderRef's history: the server's close row, one request where
the listing and then the history made two; the rows handed to pricing once."""

from __future__ import annotations

from multirun.api.client import AlgogeneClient
from multirun.core.redact import Secret
from multirun.sim import SimServer
from tests.conftest import wait_until


def client_on(sim: SimServer, asked: list[str]) -> AlgogeneClient:
    return AlgogeneClient(
        sim.base_url, "alice", Secret("sim-key-0123456789"), "livetest", "ACC-1",
        on_request=lambda endpoint, outcome: asked.append(endpoint),
    )  # fmt: skip


def opened(client: AlgogeneClient, ref: str) -> str:
    trade_id = client.open_order("BTCUSD", "BUY", 1, ref).trade_id
    wait_until(lambda: client.opened_trades(trade_id))  # filled and listed
    return str(trade_id)


def test_a_close_is_confirmed_by_its_history_and_priced_from_that_read(
    sim_factory: object,
) -> None:
    sim = sim_factory(fill_delay_ms=0)  # type: ignore[operator]
    asked: list[str] = []
    with client_on(sim, asked) as client:
        trade_id = opened(client, "mr-a-1")
        asked.clear()
        client.close_trades([trade_id], order_ref="mr-a-1")
        assert asked[0] == "close_orders" and "strategy_trade" in asked
        assert asked[-1] == "strategy_trade"  # the last poll: the close row found
        assert trade_id not in {t.trade_id for t in client.opened_trades()}  # truly closed
        asked.clear()
        rows = client.strategy_trades(order_ref="mr-a-1")
        assert asked == [] and any(r.closes and r.realized_pl is not None for r in rows)
        assert client.strategy_trades(order_ref="mr-a-1") == rows and asked == ["strategy_trade"]


def test_without_an_order_ref_or_for_several_trades_the_listing_decides(
    sim_factory: object,
) -> None:
    sim = sim_factory(fill_delay_ms=0)  # type: ignore[operator]
    asked: list[str] = []
    with client_on(sim, asked) as client:
        trades = [opened(client, f"mr-a-{n}") for n in range(3)]
        asked.clear()
        client.close_trades([trades[0]])
        client.close_trades(trades[1:], order_ref="mr-a-1")  # two trades: one ref cannot tell
        assert "strategy_trade" not in asked and "opened_trades" in asked
        assert client.opened_trades() == []
