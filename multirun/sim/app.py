"""Routing, fault injection and counting: everything between HTTP and the broker.

:meth:`SimApp.dispatch` turns (method, path, parameters) into a :class:`Reply`;
the HTTP layer only reads requests and writes (or drops) replies.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multirun.sim import marketdata, misleads
from multirun.sim import params as p
from multirun.sim.broker import Broker
from multirun.sim.clock import fmt_ts
from multirun.sim.faults import FaultDecision, FaultInjector
from multirun.sim.market import INSTRUMENTS
from multirun.sim.params import ApiFail, Params

log = logging.getLogger("multirun.sim")

REST_PREFIX = "/rest/v1/"
SIM_PREFIX = "/sim/"
Handler = Callable[[Params], dict[str, Any]]
# the clock may not pass this (9000-01-01 UTC): timestamps must stay printable (year <= 9999)
LATEST_TIME = 221_845_392_000.0
# endpoints that never look at a token: a revoke fault there would revoke it unseen
TOKEN_FREE = frozenset(
    {"session", "realtime_price", "history_price", "list_instrument", "meta_instrument"}
)
LATE_KINDS = frozenset({"late_exec", "refuse_after_exec"})  # open_order: executed, misreported


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    drop: bool = False  # close the connection without answering
    trickle_s: float = 0.0  # > 0: write the reply one byte every this many seconds
    encoding: str = ""  # Content-Encoding of body ("gzip"), if any
    headers: tuple[tuple[str, str], ...] = ()  # further headers (a 429's Retry-After)


def json_reply(status: int, body: object) -> Reply:
    return Reply(status, json.dumps(body).encode())


def _huge(reply: Reply, size: int) -> Reply:
    """``reply``'s JSON padded with spaces to ``size`` bytes, gzip-compressed."""
    body = reply.body.rstrip()
    padded = body[:-1] + b" " * max(0, size - len(body)) + body[-1:]
    return Reply(reply.status, gzip.compress(padded, compresslevel=6), encoding="gzip")


def _throttled(retry_after_s: float) -> Reply:
    """A 429 telling the client to wait ``retry_after_s`` (whole seconds, rounded up)."""
    fail = ApiFail(429, "too many requests")
    seconds = str(math.ceil(retry_after_s))
    return Reply(429, json.dumps(fail.body()).encode(), headers=(("Retry-After", seconds),))


class SimStats:
    """Request, auth and fault counters (GET /sim/stats)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.auth_rejections = 0

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def count_status(self, status: int) -> None:
        if status in (401, 403):
            with self._lock:
                self.auth_rejections += 1

    def snapshot(self, tokens_issued: int, tokens_replaced: int) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "tokens_issued": tokens_issued,
                "tokens_replaced": tokens_replaced,
                "auth_rejections": self.auth_rejections,
                "faults_injected": dict(self.faults),
            }


class SimApp:
    def __init__(self, broker: Broker, faults: FaultInjector, stopping: threading.Event) -> None:
        self.broker = broker
        self.faults = faults
        self.stats = SimStats()
        self.stopping = stopping
        broker.sessions.one_token_per_user = faults.settings.one_token_per_user
        self._rest = self._rest_routes()
        self._sim = self._sim_routes()

    # --- routes ---------------------------------------------------------------

    def _rest_routes(self) -> dict[str, tuple[str, Handler]]:
        b = self.broker
        market, clock = b.market, b.clock

        def md(fn: Callable[..., dict[str, Any]]) -> Handler:
            return lambda params: fn(market, clock, params)

        return {
            "session": ("GET", b.session),
            "accounts": ("GET", b.accounts),
            "balance": ("GET", b.balance),
            "positions": ("GET", b.positions),
            "opened_trades": ("GET", b.opened_trades),
            "pending_trades": ("GET", b.pending_trades),
            "query_order": ("GET", b.query_order),
            "open_order": ("POST", b.open_order),
            "close_orders": ("POST", b.close_orders),
            "cancel_orders": ("POST", b.cancel_orders),
            "update_opened_order": ("POST", b.update_opened_order),
            "update_pending_order": ("POST", b.update_pending_order),
            "strategy_trade": ("GET", b.strategy_trade),
            "strategy_pl": ("GET", b.strategy_pl),
            "strategy_bal": ("GET", b.strategy_bal),
            "strategy_pos": ("GET", b.strategy_pos),
            "strategy_cashflow": ("GET", b.strategy_cashflow),
            "strategy_stats": ("GET", b.strategy_stats),
            "strategy_logs": ("GET", b.strategy_logs),
            "realtime_price": ("GET", md(marketdata.realtime_price)),
            "history_price": ("GET", md(marketdata.history_price)),
            "list_instrument": ("GET", md(marketdata.list_instrument)),
            "meta_instrument": ("GET", md(marketdata.meta_instrument)),
        }

    def _sim_routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "ledger"): lambda _: {"orders": self.broker.ledger()},
            ("GET", "stats"): lambda _: self.stats_snapshot(),
            ("GET", "faults"): lambda _: self.faults.settings.to_dict(),
            ("POST", "faults"): self._set_faults,
            ("GET", "clock"): lambda _: self._clock_state(),
            ("POST", "clock"): self._advance,
            ("POST", "price"): self._pin_price,
            ("GET", "health"): lambda _: {"status": "OK"},
        }

    # --- dispatch -------------------------------------------------------------

    def dispatch(self, method: str, path: str, params: Params | ApiFail) -> Reply:
        if path.startswith(SIM_PREFIX):
            return self._dispatch_sim(method, path[len(SIM_PREFIX) :], params)
        if path.startswith(REST_PREFIX):
            return self._dispatch_rest(method, path[len(REST_PREFIX) :].strip("/"), params)
        self.stats.count_request("unknown")
        return json_reply(404, ApiFail(404, f"unknown endpoint: {path}").body())

    def _dispatch_sim(self, method: str, name: str, params: Params | ApiFail) -> Reply:
        name = name.strip("/")
        self.stats.count_request(f"sim/{name}")
        handler = self._sim.get((method, name))
        if handler is None:
            known = any(n == name for _, n in self._sim)
            fail = ApiFail(405, "method not allowed") if known else ApiFail(404, "unknown endpoint")
            return json_reply(fail.status, fail.body())
        return self._run(handler, params)

    def _dispatch_rest(self, method: str, name: str, params: Params | ApiFail) -> Reply:
        route = self._rest.get(name)
        self.stats.count_request(name if route else "unknown")
        if route is None:
            return json_reply(404, ApiFail(404, f"unknown endpoint: /{name}").body())
        if route[0] != method:
            return json_reply(405, ApiFail(405, f"/{name} takes {route[0]}").body())
        if isinstance(params, ApiFail):
            return self._finish(json_reply(params.status, params.body()))
        if not self.faults.settings.applies_to(name):
            return self._run(route[1], params)
        has_token = bool(params.get("token")) and name not in TOKEN_FREE
        decision = self.faults.decide(has_token=has_token, endpoint=name)
        if decision.kind in misleads.SHAPES or decision.kind in LATE_KINDS:
            return self._misleading(decision, route[1], params)
        return self._with_faults(decision, route[1], params)

    def _with_faults(self, decision: FaultDecision, handler: Handler, params: Params) -> Reply:
        if decision.delay_s > 0:
            self.stats.count_fault("latency")
            if self.stopping.wait(decision.delay_s):
                return Reply(0, drop=True)
        kind = decision.kind
        if kind:
            self.stats.count_fault(kind)
        if kind == "drop":
            return Reply(0, drop=True)
        if kind == "error":
            fail = ApiFail(decision.error_status, "simulated server error")
            return json_reply(fail.status, fail.body())
        if kind == "rate_limit":
            return _throttled(decision.retry_after_s)
        if kind == "revoke":
            self.broker.revoke(str(params.get("token")))
        reply = self._run(handler, params)
        if kind == "malformed" and reply.status == 200:
            return Reply(200, reply.body[: max(1, len(reply.body) // 2)])
        if kind == "slow_success" and self.stopping.wait(decision.hold_s):
            return Reply(0, drop=True)
        if kind == "trickle":
            return Reply(reply.status, reply.body, trickle_s=decision.trickle_s)
        if kind == "huge" and reply.status == 200:
            return _huge(reply, decision.huge_bytes)
        return reply

    def _misleading(self, decision: FaultDecision, handler: Handler, params: Params) -> Reply:
        """The kinds of a server that misleads; each is counted only where it took effect."""
        if decision.delay_s > 0:
            self.stats.count_fault("latency")
            if self.stopping.wait(decision.delay_s):
                return Reply(0, drop=True)
        kind = str(decision.kind)
        if kind in misleads.SHAPES:
            shape = misleads.SHAPES[kind]
            reply = self._run(handler, params, lambda b: shape(b, random.Random(decision.sub_seed)))
        elif kind == "late_exec":
            reply = self._run(lambda q: self.broker.open_order(q, delay_s=decision.late_s), params)
        else:
            reply = self._run(handler, params)
        if reply.status != 200:
            return reply  # refused: nothing executed, nothing to mislead about
        self.stats.count_fault(kind)
        if kind == "late_exec" and (not decision.late_ack or self.stopping.wait(decision.late_s)):
            return Reply(0, drop=True)
        if kind == "refuse_after_exec":
            self.broker.revoke(str(params.get("token")))
            return self._finish(json_reply(401, ApiFail(401, "token revoked").body()))
        return reply

    def _run(
        self,
        handler: Handler,
        params: Params | ApiFail,
        shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Reply:
        try:
            if isinstance(params, ApiFail):
                raise params
            body = handler(params)
            return self._finish(json_reply(200, shape(body) if shape else body))
        except ApiFail as fail:
            return self._finish(json_reply(fail.status, fail.body()))
        except Exception as error:  # a simulator bug: answer 500, log without parameters
            log.error("internal error: %s", type(error).__name__, exc_info=True)
            return json_reply(500, ApiFail(500, "internal error").body())

    def _finish(self, reply: Reply) -> Reply:
        self.stats.count_status(reply.status)
        return reply

    # --- /sim/ controls -------------------------------------------------------

    def stats_snapshot(self) -> dict[str, Any]:
        sessions = self.broker.sessions
        return self.stats.snapshot(sessions.tokens_issued, sessions.tokens_replaced)

    def set_faults(self, changes: dict[str, Any]) -> dict[str, object]:
        """Apply ``changes`` (unset names keep their values); ValueError if invalid."""
        settings = self.faults.update(changes)
        self.broker.sessions.one_token_per_user = settings.one_token_per_user
        return settings.to_dict()

    def _set_faults(self, params: Params) -> dict[str, Any]:
        changes = dict(params)
        if isinstance(changes.get("endpoints"), list):
            changes["endpoints"] = tuple(changes["endpoints"])
        try:
            return self.set_faults(changes)
        except (TypeError, ValueError) as error:
            raise ApiFail(400, str(error)) from None

    def _clock_state(self) -> dict[str, Any]:
        clock = self.broker.clock
        return {"now_utc": fmt_ts(clock.now()), "offset_s": clock.offset}

    def _advance(self, params: Params) -> dict[str, Any]:
        seconds = p.number(params, "advance_s", required=True)
        if seconds is None or self.broker.clock.now() + seconds > LATEST_TIME:
            raise ApiFail(400, "invalid parameter: advance_s would move the clock past year 9000")
        self.broker.clock.advance(seconds)
        self.broker.process()
        return self._clock_state()

    def _pin_price(self, params: Params) -> dict[str, Any]:
        symbol = str(params.get("instrument", "")).upper()
        if symbol not in INSTRUMENTS:
            raise ApiFail(400, f"unknown instrument: {symbol}")
        mid = p.number(params, "mid", required=True, positive=True)
        assert mid is not None  # required
        return self.pin_price(symbol, mid)

    def pin_price(self, symbol: str, mid: float) -> dict[str, Any]:
        now = self.broker.clock.now()
        self.broker.market.pin(symbol, mid, now)
        self.broker.process()
        bid, ask = self.broker.market.quote(symbol, self.broker.clock.now())
        return {"instrument": symbol, "bidPrice": bid, "askPrice": ask}
