"""One account's entry of runner.yaml as the checks see it: ``defaults`` merged in, each
value's place in the file, and the durations the checks have parsed.

:mod:`multirun.config.loader` builds the entries and turns them into
:class:`~multirun.config.specs.AccountSpec`; the checks (:mod:`multirun.config.settings_checks`,
:mod:`multirun.config.strategy_checks`) read them. It lives in a module of its own so that
both sides import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multirun.config import schema
from multirun.config.findings import Findings, YamlPath
from multirun.config.specs import parse_interval

# The tick_timeout of an account that sets none (the schema's default, in seconds).
DEFAULT_TICK_TIMEOUT_S = parse_interval(schema.account_defaults()["tick_timeout"])


@dataclass
class AccountEntry:
    """An account entry with ``defaults`` merged in, remembering where each value is written."""

    path: YamlPath  # ("accounts", index)
    values: dict[str, Any]
    origins: dict[str, YamlPath]  # key -> where its value is written (the account or defaults)
    seconds: dict[str, int] = field(default_factory=dict)  # durations parsed by the checks

    @classmethod
    def merge(cls, index: int, defaults: dict[str, Any], entry: dict[str, Any]) -> AccountEntry:
        path: YamlPath = ("accounts", index)
        # Whole values: an account's `params` replaces the default params, it is not merged.
        origins: dict[str, YamlPath] = {key: ("defaults", key) for key in defaults}
        origins.update({key: (*path, key) for key in entry})
        return cls(path, {**defaults, **entry}, origins)

    def origin(self, key: str) -> YamlPath:
        """Where ``key``'s value is written; the account's own place when it is not set."""
        return self.origins.get(key, (*self.path, key))

    def usable(self, key: str, found: Findings) -> bool:
        """``key`` is set and no error has been found in its value: worth checking further."""
        return key in self.values and not found.is_bad(self.origin(key))

    @property
    def interval_s(self) -> int | None:
        """The interval in seconds; None until the check has parsed it (or when it failed)."""
        return self.seconds.get("interval")

    @property
    def tick_timeout_s(self) -> int:
        """The tick_timeout in seconds as parsed by the check, else the default."""
        return self.seconds.get("tick_timeout", DEFAULT_TICK_TIMEOUT_S)
