"""The simulated ALGOGENE back office: sessions, accounts and orders.

Every public method takes the request's parameters and returns the reply body,
or raises :class:`ApiFail`. One lock guards all state; :meth:`Broker.process`
(called before each request and by the server's engine thread) fills, expires and
closes orders whose time has come or whose price was crossed. The engine sleeps until
:meth:`Broker.next_event`, and :attr:`Broker.wakeup` is set whenever a request or a
clock advance may bring that moment closer. An order request's parameters are read by
:mod:`multirun.sim.order_requests`.
"""

from __future__ import annotations

import math
import threading
import time

from multirun.sim import history
from multirun.sim import params as p
from multirun.sim.accounts import RUNMODES, Directory
from multirun.sim.clock import SimClock, fmt_ts
from multirun.sim.market import INSTRUMENTS, Market
from multirun.sim.order_requests import apply_updates, new_order
from multirun.sim.orders import CANCELLED, CLOSED, OPEN, PENDING, Account, Order
from multirun.sim.params import ApiFail, Params
from multirun.sim.rules import Quoter, beyond, crossed, next_moment, side_price, timed_close
from multirun.sim.sessions import Sessions


class Broker:
    def __init__(
        self,
        market: Market,
        clock: SimClock,
        directory: Directory,
        *,
        token_ttl_s: float,
        fill_delay_s: float,
        initial_balance: float,
    ) -> None:
        self.market = market
        self.clock = clock
        self.directory = directory
        self.token_ttl_s = token_ttl_s
        self.fill_delay_s = fill_delay_s
        self.initial_balance = initial_balance
        self.lock = threading.RLock()
        self.sessions = Sessions(directory, clock, token_ttl_s)
        self._last_id = 0
        self._accounts: dict[tuple[str, str, str], Account] = {}
        self._orders: dict[int, Order] = {}
        self._watch: dict[int, Order] = {}  # orders process() must look at
        self._arriving: dict[int, Order] = {}  # late orders (late_exec) not yet taken on
        # Set when an order, a close, an update or a clock advance may have moved the next
        # event earlier: the engine then recomputes how long it may sleep.
        self.wakeup = threading.Event()
        clock.on_advance(self.wakeup.set)

    # --- auth -----------------------------------------------------------------

    def session(self, params: Params) -> dict[str, object]:
        return self.sessions.issue(params)

    def revoke(self, token: str) -> None:
        self.sessions.revoke(token)

    def revoke_all(self) -> None:
        self.sessions.revoke_all()

    def _user(self, params: Params) -> str:
        return self.sessions.user(params)

    def _runmode(self, params: Params) -> str:
        runmode = p.text(params, "runmode", required=True)
        if runmode not in RUNMODES:
            raise ApiFail(400, "invalid parameter: runmode must be livetest or livetrade")
        return runmode

    def _account(self, params: Params, *, token_optional: bool = False) -> Account:
        user = self.sessions.user(params, token_optional=token_optional)
        runmode = self._runmode(params)
        accountid = p.text(params, "accountid", required=True)
        if not self.directory.account_ok(user, runmode, accountid):
            raise ApiFail(403, f"account {accountid} is not available in {runmode}")
        return self._provision(user, runmode, accountid)

    def _provision(self, user: str, runmode: str, accountid: str) -> Account:
        key = (user, runmode, accountid)
        account = self._accounts.get(key)
        if account is None:
            cash = self.directory.balance(user) or self.initial_balance
            now = self.clock.now()
            account = Account(user, runmode, accountid, cash, opened=now, updated=now)
            self._accounts[key] = account
        return account

    # --- reading --------------------------------------------------------------

    def accounts(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            user = self._user(params)
            runmode = self._runmode(params)
            for accountid in self.directory.listed(user, runmode):
                self._provision(user, runmode, accountid)
            wanted = p.text(params, "accountid")
            if wanted and self.directory.account_ok(user, runmode, wanted):
                self._provision(user, runmode, wanted)
            mine = [a for k, a in self._accounts.items() if k[0] == user and k[1] == runmode]
            rows = [self._account_row(a) for a in sorted(mine, key=lambda a: a.accountid)]
        return {"count": len(rows), "res": rows}

    def balance(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            fields = self._balance_now(account)
            return {"res": {**fields, "timestamp": fmt_ts(self.clock.now()), "BaseCurrency": "USD"}}

    def positions(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            now = self.clock.now()
            books: dict[str, dict[str, float]] = {}
            for order in self._open_orders(account):
                book = books.setdefault(order.instrument, {"net": 0.0, "last": 0.0})
                book["net"] += order.buysell * order.volume
                book["last"] = max(book["last"], order.filled or 0.0)
            res = {}
            for symbol, book in sorted(books.items()):
                if abs(book["net"]) < 1e-12:
                    continue
                inst = INSTRUMENTS[symbol]
                units = book["net"] * inst.contract_size
                value = self.market.to_usd(
                    inst.settle_currency, units * self.market.mid(symbol, now), now
                )
                res[symbol] = {
                    "LastTradeTime": fmt_ts(book["last"]),
                    "MarketValue": round(value, 2),
                    "Position": round(units, 8),
                    "netVolume": round(book["net"], 8),
                }
        return {"count": len(res), "res": res}

    def opened_trades(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            wanted = p.text(params, "tradeID")
            now = self.clock.now()
            rows = [
                o.trade_reply(self._unrealized(o, now))
                for o in self._open_orders(account)
                if not wanted or str(o.trade_id) == wanted
            ]
        return {"count": len(rows), "res": rows}

    def pending_trades(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            rows = [
                o.trade_reply(0.0) for o in self._pending_orders(account) if o.ordertype != "MKT"
            ]
        return {"count": len(rows), "res": rows}

    def query_order(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            order = self._find(account, p.trade_id(params))
            return order.query_reply()

    # --- history (the account's past) -----------------------------------------

    def _history(self, params: Params) -> tuple[Account, list[Order], float | None]:
        """The account of a reporting call, its orders (oldest first) and its ``acdate``.

        ALGOGENE's client names the account ``runtime_id`` and sends no token."""
        if not p.present(params, "accountid") and p.present(params, "runtime_id"):
            params = {**params, "accountid": params["runtime_id"]}
        account = self._account(params, token_optional=True)
        day = history.acdate(p.text(params, "acdate"))
        return account, [self._orders[i] for i in account.order_ids], day

    def strategy_trade(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            _, orders, day = self._history(params)
            ref = p.text(params, "orderRef") if p.present(params, "orderRef") else None
            rows = history.transactions(orders, day, ref)
        return {"count": len(rows), "res": rows}

    def strategy_pl(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            _, orders, day = self._history(params)
            rows = history.daily_pl(orders, day)
        return {"count": len(rows), "res": rows}

    def strategy_bal(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account, orders, day = self._history(params)
            ends = history.day_ends(account.opened, self.clock.now(), day)
            rows = history.daily_bal(account, orders, ends, self._value)
        return {"count": len(rows), "res": rows}

    def strategy_pos(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account, orders, day = self._history(params)
            ends = history.day_ends(account.opened, self.clock.now(), day)
            rows = history.daily_pos(orders, ends)
        return {"count": len(rows), "res": rows}

    def strategy_cashflow(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account, _, day = self._history(params)
            rows = history.cashflow(account, day)
        return {"count": len(rows), "res": rows}

    def strategy_logs(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            _, orders, _ = self._history(params)
            lines = history.log_lines(orders)
        return {"count": len(lines), "res": "\n".join(lines)}

    def strategy_stats(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account, orders, day = self._history(params)
            settings: dict[str, object] = {
                "strategyName": account.accountid,
                "accountid": account.accountid,
                "runmode": account.runmode,
                "BaseCurrency": "USD",
                "InitialCapital": round(account.initial, 2),
            }
            unrealized = None
            if day is None:
                unrealized = self._value(self._open_orders(account), self.clock.now())[0]
            return history.stats(orders, settings, unrealized, day)

    # --- trading --------------------------------------------------------------

    def open_order(self, params: Params, delay_s: float = 0.0) -> dict[str, object]:
        """Accept an order; with ``delay_s``, it is taken on (listed, filled) that much later."""
        with self.lock:
            self.process()
            account = self._account(params)
            order = new_order(account, params, self.clock, self.fill_delay_s)
            self._check_margin(account, order)
            order.trade_id = self._new_id()
            self._orders[order.trade_id] = order
            if delay_s > 0:
                order.received = order.tif_from = order.received + delay_s
                if order.fill_due is not None:
                    order.fill_due += delay_s
                self._arriving[order.trade_id] = order
            else:
                self._take_on(order)
        self.wakeup.set()
        return {
            "status": "PENDING_TO_FILL",
            "timestamp_utc": fmt_ts(order.received),
            "tradeID": order.trade_id,
        }

    def close_orders(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            targets = self._close_targets(account, params)
            due = self.clock.now() + self.fill_delay_s
            for order in targets:
                if order.close_due is None:
                    order.close_due = due
                    self._rewatch(order)
            self.process()
        self.wakeup.set()
        listed = "".join(f"'{o.trade_id}'," for o in targets)
        return {"status": "SUCCESS", "res": f"Submitted close order request for {listed}"}

    def cancel_orders(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            ids = p.trade_ids(params)
            targets = [o for o in self._pending_orders(account) if o.trade_id in ids]
            if not targets:
                raise ApiFail(404, "no pending order with the given tradeIDs")
            for order in targets:
                self._cancel(order, "cancelled by request")
        return {"status": "SUCCESS", "res": "Submitted for BULK_CANCEL"}

    def update_opened_order(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            order = self._find(account, p.trade_id(params))
            if order.status != OPEN:
                raise ApiFail(404, f"trade {order.trade_id} is not open")
            apply_updates(order, params, self.clock)
            self._rewatch(order)
        self.wakeup.set()
        return {"status": "SUCCESS", "res": "Submitted for order update!"}

    def update_pending_order(self, params: Params) -> dict[str, object]:
        with self.lock:
            self.process()
            account = self._account(params)
            order = self._find(account, p.trade_id(params))
            if order.status != PENDING:
                raise ApiFail(404, f"order {order.trade_id} is not pending")
            price = p.number(params, "price", positive=True)
            tif = p.number(params, "timeinforce")
            apply_updates(order, params, self.clock)
            if price is not None and order.ordertype != "MKT":
                order.price = price
            if tif is not None:
                order.timeinforce, order.tif_from = tif, self.clock.now()
        self.wakeup.set()
        return {"status": "SUCCESS", "res": "Submitted for pending order update!"}

    # --- inspection -----------------------------------------------------------

    def ledger(self) -> list[dict[str, object]]:
        with self.lock:
            self.process()
            return [o.ledger_entry() for o in self._orders.values()]

    # --- the engine -----------------------------------------------------------

    def _take_on(self, order: Order) -> None:
        account = self._accounts[order.account_key]
        self._arriving.pop(order.trade_id, None)
        self._watch[order.trade_id] = order
        account.order_ids.append(order.trade_id)
        account.live[order.trade_id] = order

    def process(self) -> None:
        """Take on late orders, fill, expire, and close every order whose moment has come."""
        with self.lock:
            now = self.clock.now()
            for order in sorted(self._arriving.values(), key=lambda o: o.received):
                if order.received <= now:
                    self._take_on(order)
            if not self._watch:
                return
            quotes: dict[str, tuple[float, float]] = {}

            def quote(symbol: str) -> tuple[float, float]:
                if symbol not in quotes:
                    quotes[symbol] = self.market.quote(symbol, now)
                return quotes[symbol]

            for order in list(self._watch.values()):
                if order.status == PENDING:
                    self._step_pending(order, now, quote)
                if order.status == OPEN:
                    self._step_open(order, now, quote)

    def next_event(self) -> float | None:
        """The simulator time at which :meth:`process` next has something to do (a late
        order's arrival, or :func:`rules.next_moment` of a watched order); None: nothing
        until a request or a clock advance (token expiry is checked when a token is used)."""
        with self.lock:
            now = self.clock.now()
            moments: list[float | None] = [o.received for o in self._arriving.values()]
            moments += [next_moment(o, now) for o in self._watch.values()]
            return min((m for m in moments if m is not None), default=None)

    def _step_pending(self, order: Order, now: float, quote: Quoter) -> None:
        lapse = order.tif_from + order.timeinforce if order.timeinforce > 0 else math.inf
        due = order.fill_due  # market orders only
        if due is not None and due <= min(now, lapse):
            # at its due moment and that moment's price, however far the clock jumped past it
            price = side_price(order, self.market.quote(order.instrument, due), True)
            self._fill(order, price, due)
        elif now >= lapse:
            self._cancel(order, "timeinforce lapsed", lapse)
        elif order.ordertype != "MKT":
            price = side_price(order, quote(order.instrument), True)
            if crossed(order, price):
                self._fill(order, price, now)

    def _step_open(self, order: Order, now: float, quote: Quoter) -> None:
        timed = timed_close(order, now)
        if timed is not None:
            moment, reason = timed
            price = side_price(order, self.market.quote(order.instrument, moment), False)
            self._close(order, price, moment, reason)
            return
        price = side_price(order, quote(order.instrument), False)
        if order.take_profit > 0 and beyond(order, price, order.take_profit, profit=True):
            self._close(order, price, now, "take profit")
        elif order.stop_loss > 0 and beyond(order, price, order.stop_loss, profit=False):
            self._close(order, price, now, "stop loss")

    def _fill(self, order: Order, price: float, now: float) -> None:
        order.status, order.filled, order.fill_price = OPEN, now, price
        self._rewatch(order)
        self._touch(order, now)

    def _rewatch(self, order: Order) -> None:
        """Watch an open order only while something can close it on its own."""
        if order.take_profit or order.stop_loss or order.holdtime or order.close_due is not None:
            self._watch[order.trade_id] = order
        else:
            self._watch.pop(order.trade_id, None)

    def _close(self, order: Order, price: float, now: float, reason: str) -> None:
        order.status, order.closed, order.close_price = CLOSED, now, price
        order.close_reason = reason
        # booked in whole cents, as listed: totals are sums of the trades' listed figures
        order.realized_pl = round(self._pnl(order, price, now), 2)
        account = self._accounts[order.account_key]
        account.realized_cents += history.cents(order.realized_pl)
        self._retire(order)
        self._touch(order, now)

    def _cancel(self, order: Order, reason: str, now: float | None = None) -> None:
        order.status, order.close_reason = CANCELLED, reason
        order.closed = self.clock.now() if now is None else now
        self._retire(order)
        self._touch(order, order.closed)

    def _retire(self, order: Order) -> None:
        self._watch.pop(order.trade_id, None)
        self._accounts[order.account_key].live.pop(order.trade_id, None)

    def _touch(self, order: Order, now: float) -> None:
        account = self._accounts[order.account_key]
        account.updated = max(account.updated, now)  # events due in a clock jump come in any order

    # --- helpers --------------------------------------------------------------

    def _new_id(self) -> int:
        """The wall clock in microseconds (or one past the last id, if that is later).

        Trade ids must never repeat on one account, across runs too: a simulator started
        after another one stopped (the supervisor's, restarted while the journals persist)
        hands out only ids above the first's. Not from the seed (every run of one seed would
        reissue the same ids) nor from the simulator's clock (it may have been advanced).
        """
        self._last_id = max(self._last_id + 1, int(time.time() * 1_000_000))
        return self._last_id

    def _check_margin(self, account: Account, order: Order) -> None:
        now = self.clock.now()
        fields = self._balance_now(account)
        inst = INSTRUMENTS[order.instrument]
        price = order.price or self.market.mid(order.instrument, now)
        notional = order.volume * inst.contract_size * price
        needed = self.market.to_usd(inst.settle_currency, notional * inst.margin_rate, now)
        if needed > fields["available_Balance"]:
            raise ApiFail(400, "insufficient margin for this order")

    def _close_targets(self, account: Account, params: Params) -> list[Order]:
        opened = self._open_orders(account)
        if p.present(params, "tradeIDs"):
            ids = p.trade_ids(params)
            targets = [o for o in opened if o.trade_id in ids]
            what = "tradeIDs"
        elif p.present(params, "orderRef"):
            ref = p.text(params, "orderRef")
            targets = [o for o in opened if o.order_ref == ref]
            what = "orderRef"
        else:
            raise ApiFail(400, "missing parameter: tradeIDs or orderRef")
        if not targets:
            waiting = [o for o in self._pending_orders(account) if o.ordertype == "MKT"]
            if what == "tradeIDs" and any(o.trade_id in ids for o in waiting):
                raise ApiFail(404, "trade is not open yet (still waiting to fill)")
            raise ApiFail(404, f"no open trade with the given {what}")
        return targets

    def _find(self, account: Account, trade_id: int) -> Order:
        order = self._orders.get(trade_id)
        if (
            order is None
            or trade_id in self._arriving
            or order.account_key
            != (
                account.user,
                account.runmode,
                account.accountid,
            )
        ):
            raise ApiFail(404, f"unknown tradeID: {trade_id}")
        return order

    def _pending_orders(self, account: Account) -> list[Order]:
        return [o for o in account.live.values() if o.status == PENDING]

    def _open_orders(self, account: Account) -> list[Order]:
        return [o for o in account.live.values() if o.status == OPEN]

    def _pnl(self, order: Order, price: float, now: float) -> float:
        inst = INSTRUMENTS[order.instrument]
        fill = order.fill_price or 0.0
        raw = (price - fill) * order.buysell * order.volume * inst.contract_size
        return self.market.to_usd(inst.settle_currency, raw, now)

    def _unrealized(self, order: Order, now: float) -> float:
        price = side_price(order, self.market.quote(order.instrument, now), False)
        return self._pnl(order, price, now)

    def _value(self, trades: list[Order], at: float) -> tuple[int, float]:
        """(unrealized P&L in cents, margin used) of open ``trades`` at the moment ``at``:
        each trade's unrealized P&L rounded to cents as the listings show it, then added."""
        unrealized, margin = 0, 0.0
        for order in trades:
            inst = INSTRUMENTS[order.instrument]
            unrealized += history.cents(self._unrealized(order, at))
            notional = order.volume * inst.contract_size * self.market.mid(order.instrument, at)
            margin += self.market.to_usd(inst.settle_currency, notional * inst.margin_rate, at)
        return unrealized, margin

    def _balance_now(self, account: Account) -> dict[str, float]:
        """``/balance``'s money fields for ``account`` now."""
        unrealized, margin = self._value(self._open_orders(account), self.clock.now())
        return history.balance_fields(account.initial, account.realized_cents, unrealized, margin)

    def _account_row(self, account: Account) -> dict[str, object]:
        fields = self._balance_now(account)
        return {
            "accountid": account.accountid,
            "runmode": account.runmode,
            "NAV": fields["NAV"],
            "availableBalance": fields["available_Balance"],
            "marginUsed": fields["margin_Used"],
            "realizedPL": fields["realized_PL"],
            "unrealizedPL": fields["unrealized_PL"],
            "lastUpdatedTime": fmt_ts(account.updated),
            "isTrading": True,
        }
