"""The runner-wide setting checks of runner.yaml: watchdog, notify targets, metrics, names.

(:class:`SettingsChecks`, a part of :mod:`multirun.config.loader`'s checker.) Each rule here
relates a top-level setting to the accounts or to the world outside the file: the watchdog
must leave every tick_timeout room, a webhook URL must be http(s) (and is never quoted: it
may hold a token), /metrics stays on loopback unless allowed, and no account may take the
name of one of the supervisor's own children.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from multirun.config import schema
from multirun.config.findings import Findings, YamlPath
from multirun.config.specs import SERVICE_NAMES, MetricsSpec, parse_interval

if TYPE_CHECKING:
    from multirun.config.loader import _Account

WATCHDOG_ROOM_S = 30  # watchdog_timeout must exceed every tick_timeout by more than this
DEFAULT_TICK_TIMEOUT_S = parse_interval(schema.account_defaults()["tick_timeout"])


class SettingsChecks:
    """The runner-wide checks of :mod:`multirun.config.loader`'s checker (a mixin: it adds to the
    checker's findings)."""

    found: Findings

    if TYPE_CHECKING:  # the checker's own, declared here for the type checker

        def _usable(self, account: _Account, key: str) -> bool: ...

    def _check_service_names(self, accounts: list[_Account]) -> None:
        """No account is named like the supervisor's own children (their logs and states
        would mix with the account's)."""
        for account in accounts:
            if self._usable(account, "name") and account.values["name"] in SERVICE_NAMES:
                self.found.add(
                    account.origin("name"),
                    f"'{account.values['name']}' is the name of one of multirun's own "
                    f"processes ({', '.join(SERVICE_NAMES)}): choose another",
                )

    def _check_watchdog(self, data: dict[str, Any], accounts: list[_Account]) -> None:
        """watchdog_timeout must leave every account's tick_timeout 30 s of room."""
        value = data.get("watchdog_timeout", schema.runner_defaults()["watchdog_timeout"])
        if self.found.is_bad(("watchdog_timeout",)):
            return
        try:
            watchdog = parse_interval(value)
        except ValueError as error:
            self.found.add(("watchdog_timeout",), str(error))
            return
        for account in accounts:
            tick = account.seconds.get("tick_timeout", DEFAULT_TICK_TIMEOUT_S)
            if watchdog <= tick + WATCHDOG_ROOM_S:
                self.found.add(
                    account.origin("tick_timeout"),
                    f"tick_timeout {tick} s leaves the watchdog no room: watchdog_timeout "
                    f"({watchdog} s) must exceed it by more than {WATCHDOG_ROOM_S} s",
                )

    def _check_notify(self, data: dict[str, Any]) -> None:
        """Each ``notify:`` URL is http(s) with a host (the message never quotes it)."""
        targets = data.get("notify")
        for index, entry in enumerate(targets if isinstance(targets, list) else []):
            path: YamlPath = ("notify", index, "url")
            url = entry.get("url") if isinstance(entry, dict) else None
            if not isinstance(url, str) or self.found.is_bad(path):
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.found.add(path, "must be an http:// or https:// URL with a host")

    def _check_metrics(self, data: dict[str, Any]) -> None:
        """``metrics.listen``: loopback unless ``allow_remote`` (then a warning)."""
        found, path = data.get("metrics"), ("metrics", "listen")
        if not isinstance(found, dict) or self.found.is_bad(path):
            return
        try:
            spec = MetricsSpec.parse(str(found.get("listen")), found.get("allow_remote") is True)
        except ValueError as error:
            self.found.add(path, str(error))
            return
        if not spec.loopback:
            self.found.add(path, "/metrics is served to other hosts (no authentication)", "warning")
