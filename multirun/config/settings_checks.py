"""The runner-wide setting checks of runner.yaml: watchdog, notify targets, metrics, names.

Each rule here relates a top-level setting to the accounts or to the world outside the
file: the watchdog must leave every tick_timeout room, a webhook URL must be http(s) (and
is never quoted: it may hold a token), /metrics stays on loopback unless allowed, the
dashboard (``web:``) off loopback only behind a token, and no
account may take the name of one of the supervisor's own children.
:mod:`multirun.config.loader` calls them, each adding what it finds to a :class:`Findings`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from multirun.config import schema
from multirun.config.entry import AccountEntry
from multirun.config.findings import Findings, YamlPath
from multirun.config.risk_checks import check_risk
from multirun.config.specs import SERVICE_NAMES, MetricsSpec, WebSpec, parse_interval

WATCHDOG_ROOM_S = 30  # watchdog_timeout must exceed every tick_timeout by more than this


def check_settings(data: dict[str, Any], accounts: list[AccountEntry], found: Findings) -> None:
    """The top-level settings of ``data``: the watchdog, notify targets, metrics, web; the
    money limits and trading hours (:mod:`multirun.config.risk_checks`)."""
    _check_watchdog(data, accounts, found)
    _check_notify(data, found)
    _check_metrics(data, found)
    _check_web(data, found)
    check_risk(data, accounts, found)


def check_service_names(accounts: list[AccountEntry], found: Findings) -> None:
    """No account is named like the supervisor's own children (their logs and states
    would mix with the account's)."""
    for account in accounts:
        if account.usable("name", found) and account.values["name"] in SERVICE_NAMES:
            found.add(
                account.origin("name"),
                f"'{account.values['name']}' is the name of one of multirun's own "
                f"processes ({', '.join(SERVICE_NAMES)}): choose another",
            )


def _check_watchdog(data: dict[str, Any], accounts: list[AccountEntry], found: Findings) -> None:
    """watchdog_timeout must leave every account's tick_timeout 30 s of room."""
    value = data.get("watchdog_timeout", schema.runner_defaults()["watchdog_timeout"])
    if found.is_bad(("watchdog_timeout",)):
        return
    try:
        watchdog = parse_interval(value)
    except ValueError as error:
        found.add(("watchdog_timeout",), str(error))
        return
    for account in accounts:
        tick = account.tick_timeout_s
        if watchdog <= tick + WATCHDOG_ROOM_S:
            found.add(
                account.origin("tick_timeout"),
                f"tick_timeout {tick} s leaves the watchdog no room: watchdog_timeout "
                f"({watchdog} s) must exceed it by more than {WATCHDOG_ROOM_S} s",
            )


def _check_notify(data: dict[str, Any], found: Findings) -> None:
    """Each ``notify:`` URL is http(s) with a host (the message never quotes it)."""
    targets = data.get("notify")
    for index, entry in enumerate(targets if isinstance(targets, list) else []):
        path: YamlPath = ("notify", index, "url")
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or found.is_bad(path):
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.add(path, "must be an http:// or https:// URL with a host")


def _check_metrics(data: dict[str, Any], found: Findings) -> None:
    """``metrics.listen``: loopback unless ``allow_remote`` (then a warning)."""
    metrics, path = data.get("metrics"), ("metrics", "listen")
    if not isinstance(metrics, dict) or found.is_bad(path):
        return
    try:
        spec = MetricsSpec.parse(str(metrics.get("listen")), metrics.get("allow_remote") is True)
    except ValueError as error:
        found.add(path, str(error))
        return
    if not spec.loopback:
        found.add(path, "/metrics is served to other hosts (no authentication)", "warning")


def _check_web(data: dict[str, Any], found: Findings) -> None:
    """``web.listen``: off loopback only with a ``web.token`` (the page can close trades)."""
    web, path = data.get("web"), ("web", "listen")
    if not isinstance(web, dict) or found.is_bad(path) or found.is_bad(("web", "token")):
        return
    try:
        WebSpec.parse(web.get("listen"), web.get("token"))
    except ValueError as error:
        found.add(path, str(error))
