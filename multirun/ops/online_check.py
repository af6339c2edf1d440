"""`multirun validate --online`: each enabled account checked against its server, no order sent.

With each enabled account's own credentials, in this order (a failed step skips the
steps that need it):

1. **login**: ``/session`` accepts the user and key;
2. **account**: the account exists in its runmode: listed by ``/accounts``, or at least
   answered for by ``/balance`` (403 or not listed and unanswered: it does not);
3. **instrument**: listed by ``/list_instrument`` (its ``/meta_instrument`` read for the
   contract size and settlement currency);
4. **volume**: above 0 and within ``max_volume``. The API publishes no volume limits per
   instrument (no minimum, step or maximum): none is checked, and the report says so;
5. **margin**: the order's notional value (volume x contract size x ask price, converted
   to the account's base currency through a listed currency pair) against ``/balance``'s
   available balance. The margin rate is not published either: a notional above the
   available balance is a warning (it needs leverage), above :data:`MAX_LEVERAGE` times
   it a failure (no broker lends that much: a typo), and nothing available a failure.

Only GET requests are made: nothing is ever opened, closed or cancelled. Every line
printed is masked of every API key of the file (:mod:`multirun.core.redact`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from multirun.account.journal import set_aside
from multirun.api.client import AlgogeneClient
from multirun.api.transport import RequestSender
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.clock import SYSTEM_CLOCK
from multirun.core.errors import ApiError, AuthError, UsageError
from multirun.core.redact import Redactor
from multirun.core.statedir import StateDir

Status = Literal["ok", "warning", "failed", "skipped"]
MAX_LEVERAGE = 500  # more than any broker lends: a notional beyond it is a typo
READ_BUDGET_S = 8.0  # per call, retries included: an unreachable server fails, not hangs
CHECKS = ("login", "account", "instrument", "volume", "margin")


@dataclass
class Check:
    """One step's outcome for one account."""

    check: str
    status: Status
    detail: str


@dataclass
class AccountResult:
    """Every step's outcome for one account; ``ok`` unless a step failed."""

    name: str
    server: str
    checks: list[Check] = field(default_factory=list)
    journal: str | None = None  # its journal damaged, or rebuilt (set_aside.examine)

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    def add(self, check: str, status: Status, detail: str) -> None:
        self.checks.append(Check(check, status, detail))

    def skip_rest(self, why: str) -> None:
        done = {c.check for c in self.checks}
        for check in CHECKS:
            if check not in done:
                self.add(check, "skipped", why)


def check_runner(runner: RunnerSpec, *, server: str | None = None) -> list[AccountResult]:
    """Check every enabled account of ``runner`` against ``server`` (default: its own)."""
    url = server or runner.server
    if url == "sim":
        raise UsageError("server: sim has no remote server to check: pass --server URL")
    market = _Market(url)
    try:
        results = [check_account(a, url, market) for a in runner.enabled_accounts]
    finally:
        market.close()
    layout = StateDir(runner.state_dir)
    for result in results:
        result.journal = set_aside.examine(layout.account(result.name).journal, result.name)
    return results


def check_account(spec: AccountSpec, url: str, market: _Market | None = None) -> AccountResult:
    """The five checks of one account (see the module docstring)."""
    result = AccountResult(spec.name, url)
    own = market or _Market(url)
    client = AlgogeneClient(
        url, spec.user, spec.api_key, spec.runmode, spec.accountid, read_budget_s=READ_BUDGET_S
    )
    try:
        _run_checks(spec, client, own, result)
    finally:
        client.close()
        if market is None:
            own.close()
    return result


def _run_checks(
    spec: AccountSpec, client: AlgogeneClient, market: _Market, result: AccountResult
) -> None:
    try:
        listed = [a.accountid for a in client.accounts()]
    except ApiError as error:
        if error.endpoint == "session" or isinstance(error, AuthError):
            result.add("login", "failed", f"refused: {error}")
        else:
            result.add("login", "failed", f"{error}")
        return result.skip_rest("no session")
    result.add("login", "ok", f"user {spec.user}: session opened")
    try:
        balance = client.balance()
    except ApiError as error:
        result.add("account", "failed", f"{spec.accountid} ({spec.runmode}): {error}")
        return result.skip_rest("no account")
    where = "listed by /accounts" if spec.accountid in listed else "answered /balance"
    result.add("account", "ok", f"{spec.accountid} ({spec.runmode}): {where}")
    try:
        meta = market.meta(spec.instrument, spec)
    except ApiError as error:
        result.add("instrument", "failed", str(error))
        return result.skip_rest("no instrument")
    if meta is None:
        result.add("instrument", "failed", f"{spec.instrument}: not listed by /list_instrument")
        return result.skip_rest("no instrument")
    size, settle = float(meta.get("contractSize") or 1), str(meta.get("settleCurrency") or "")
    result.add("instrument", "ok", f"{spec.instrument}: contract size {size:g} {settle}".rstrip())
    _check_volume(spec, result)
    try:
        _check_margin(spec, client, market, result, size * spec.volume, settle, balance)
    except ApiError as error:
        result.add("margin", "failed", str(error))


def _check_volume(spec: AccountSpec, result: AccountResult) -> None:
    limit = spec.guardrails.max_volume
    within = f"within max_volume {limit:g}" if limit is not None else "no max_volume set"
    if limit is not None and spec.volume > limit:
        result.add("volume", "failed", f"{spec.volume:g} is above max_volume {limit:g}")
        return
    result.add(
        "volume",
        "ok",
        f"{spec.volume:g} lots, {within}; the API publishes no volume limits (not checked)",
    )


def _check_margin(
    spec: AccountSpec,
    client: AlgogeneClient,
    market: _Market,
    result: AccountResult,
    units: float,
    settle: str,
    balance: Any,
) -> None:
    base = balance.base_currency or "USD"
    ask = client.realtime_price(spec.instrument)[spec.instrument].ask
    notional = units * ask
    rate = market.rate(settle or base, base, client)
    if rate is None:
        result.add("margin", "warning", f"no listed pair converts {settle} to {base}")
        return
    notional *= rate
    available = balance.available_balance
    shown = f"notional {notional:,.2f} {base} of {available:,.2f} {base} available"
    if available <= 0:
        result.add("margin", "failed", f"{shown}: nothing available")
    elif notional > available * MAX_LEVERAGE:
        result.add("margin", "failed", f"{shown}: needs over {MAX_LEVERAGE}:1 leverage")
    elif notional > available:
        result.add("margin", "warning", f"{shown}: needs {notional / available:.1f}:1 leverage")
    else:
        result.add("margin", "ok", shown)


class _Market:
    """The server's market data (no token): instruments and their metadata, read once."""

    def __init__(self, url: str) -> None:
        self._keys: list[str] = []
        self._transport = RequestSender(
            url,
            connect_timeout=3.05,
            read_timeout=READ_BUDGET_S,
            secrets=lambda: self._keys,
            clock=SYSTEM_CLOCK,
            rng=random.Random(),
        )
        self._listed: list[str] | None = None
        self._meta: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self._transport.close()

    def _get(self, endpoint: str, spec: AccountSpec, **params: str) -> Any:
        key = spec.api_key.reveal()
        if key not in self._keys:
            self._keys.append(key)
        payload = {"user": spec.user, "api_key": key, **params}

        def once(read_timeout: float, total_s: float) -> Any:
            return self._transport.send("GET", endpoint, payload, read_timeout, total_s)[0]

        deadline = SYSTEM_CLOCK.monotonic() + READ_BUDGET_S
        return self._transport.retrying(endpoint, once, deadline)

    def listed(self, spec: AccountSpec) -> list[str]:
        if self._listed is None:
            res = self._get("list_instrument", spec).get("res")
            self._listed = [str(s) for s in res] if isinstance(res, list) else []
        return self._listed

    def meta(self, instrument: str, spec: AccountSpec) -> dict[str, Any] | None:
        """The instrument's metadata; None when the server does not list it."""
        if instrument not in self.listed(spec):
            return None
        if instrument not in self._meta:
            res = self._get("meta_instrument", spec, instrument=instrument).get("res")
            self._meta[instrument] = res if isinstance(res, dict) else {}
        return self._meta[instrument]

    def rate(self, settle: str, base: str, client: AlgogeneClient) -> float | None:
        """How many ``base`` one ``settle`` is worth, through a listed pair; None if none."""
        if settle == base:
            return 1.0
        listed = self._listed or []
        if f"{settle}{base}" in listed:
            return client.realtime_price(f"{settle}{base}")[f"{settle}{base}"].mid
        if f"{base}{settle}" in listed:
            return 1.0 / client.realtime_price(f"{base}{settle}")[f"{base}{settle}"].mid
        return None


# --- the report ----------------------------------------------------------------------


def render(results: Iterable[AccountResult], redact: Callable[[str], str]) -> str:
    """A table (one row per account, one column per check) and every non-ok detail."""
    results = list(results)
    header = ["name", *CHECKS, "result"]
    cells = [header]
    notes: list[str] = []
    for result in results:
        row = [result.name]
        for check in result.checks:
            row.append(check.status)
            if check.status in ("failed", "warning"):
                notes.append(f"{result.name}: {check.check}: {check.status}: {check.detail}")
        row.append("ok" if result.ok else "FAILED")
        if result.journal:
            notes.append(f"{result.name}: journal: {result.journal}")
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    failed = sum(not r.ok for r in results)
    summary = f"{len(results)} account(s) checked online, {failed} failed; no order was sent"
    return redact("\n".join([*lines, *notes, summary]))


def to_json(results: Iterable[AccountResult], redact: Callable[[str], str]) -> str:
    """The results as ``validate --online --json`` prints them."""
    rows = [{"name": r.name, "server": r.server, "ok": r.ok, "journal": r.journal,
             "checks": [asdict(c) for c in r.checks]} for r in results]  # fmt: skip
    return redact(json.dumps({"ok": all(r["ok"] for r in rows), "accounts": rows}, indent=2))


def redactor(runner: RunnerSpec) -> Redactor:
    """Masks every API key of the file in whatever is printed."""
    return Redactor([a.api_key.reveal() for a in runner.accounts])
