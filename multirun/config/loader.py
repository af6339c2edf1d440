"""runner.yaml: load it, check it, and turn it into typed, immutable specs.

The pipeline is: safe YAML with positions (:mod:`multirun.config.yamlload`), environment
interpolation in string values (:mod:`multirun.config.interpolate`), JSON Schema
(:mod:`multirun.config.schema`, its errors worded by :mod:`multirun.config.schema_errors`),
``defaults`` merged into each account (:class:`~multirun.config.entry.AccountEntry`), semantic
rules (each strategy built: :mod:`multirun.config.strategy_checks`; the runner-wide settings:
:mod:`multirun.config.settings_checks`), then
:class:`~multirun.config.specs.RunnerSpec`. Every step collects problems
(:mod:`multirun.config.findings`) instead of stopping at the first, so ``multirun validate``
reports them all at once, each with file, line, column and a path like
``accounts[1].volume``; :mod:`multirun.cli.validate` prints them.

No message carries a secret: API keys (and the variables they come from) are never
quoted, and every message is masked by :class:`~multirun.core.redact.Redactor` before it
leaves this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from multirun.config import schema
from multirun.config.entry import AccountEntry
from multirun.config.findings import (
    KEY_FIELD,
    WEB_TOKEN,
    CheckReport,
    Findings,
    YamlPath,
    format_path,
    is_notify_url,
    is_web_token,
    show_value,
)
from multirun.config.interpolate import (
    InterpolationError,
    has_references,
    interpolate,
    variable_names,
)
from multirun.config.schema_errors import add_schema_errors
from multirun.config.settings_checks import check_service_names, check_settings
from multirun.config.specs import (
    AccountSpec,
    Guardrails,
    MetricsSpec,
    NotifyTarget,
    RiskSpec,
    RunnerSpec,
    TradingHours,
    WebSpec,
    freeze,
    parse_interval,
)
from multirun.config.strategy_checks import check_strategy
from multirun.config.yamlload import MAX_BYTES, load_bytes, typed
from multirun.core.errors import ConfigError, UsageError
from multirun.core.redact import Secret

BINDING_FIELDS = ("user", "runmode", "accountid")


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema.document())


# --- entry points ---------------------------------------------------------------


def load(
    path: Path, *, environ: Mapping[str, str] | None = None, missing_env: str | None = None
) -> RunnerSpec:
    """The valid spec of ``path``; raises ConfigError (all problems) or UsageError.

    ``missing_env``: the value of required environment variables that are not set,
    instead of an error (see :func:`load_for_control`).
    """
    report = validate(path, environ=environ, missing_env=missing_env)
    if report.spec is None or report.problems:
        first = report.problems[0] if report.problems else None
        more = len(report.problems) - 1
        tail = f" (and {more} more: run `multirun validate {path}`)" if more > 0 else ""
        raise ConfigError(f"{first or path}{tail}", problems=report.problems)
    return report.spec


def load_for_control(path: Path) -> RunnerSpec:
    """``path`` for the commands that only find and read a supervisor (status, stop).

    They need the state_dir and the account names, not the credentials: another
    terminal need not export them, so unset required variables stand for themselves.
    """
    return load(path, missing_env=UNSET_FOR_CONTROL)


UNSET_FOR_CONTROL = "unset-for-status-and-stop"


def validate(
    path: Path,
    *,
    strict: bool = False,
    environ: Mapping[str, str] | None = None,
    missing_env: str | None = None,
) -> CheckReport:
    """Check ``path``: every problem, warnings, and the spec when there are no errors."""
    raw = _read(Path(path))
    env = os.environ if environ is None else environ
    return _Checker(Path(path), raw, env, strict, missing_env).run()


def _read(path: Path) -> bytes:
    """The file's first bytes (one more than the size limit, to detect oversized files)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a runner file") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror or error}") from None
    return raw


# --- the checker --------------------------------------------------------------------


class _Checker:
    """One validation run; collects problems as it goes."""

    def __init__(
        self,
        path: Path,
        raw: bytes,
        environ: Mapping[str, str],
        strict: bool,
        missing_env: str | None = None,
    ) -> None:
        self.path = path
        self.raw = raw
        self.environ = environ
        self.missing_env = missing_env
        self.found = Findings(str(path), strict)
        self.report = self.found.report
        self.literal_keys: set[YamlPath] = set()

    # the pipeline

    def run(self) -> CheckReport:
        data = self._parse()
        if isinstance(data, dict):
            data = self._interpolate(data, ())
            self._check_finite(data, ())
            self._check_schema(data)
            accounts = self._merged_accounts(data)
            self._check_semantics(accounts)
            check_settings(data, accounts, self.found)
            self._check_web_token()
            if not self.report.problems:
                self.report.spec = self._build(data, accounts)
        return self.found.finish()

    def _parse(self) -> Any:
        self.found.doc = load_bytes(self.raw)
        for problem in self.found.doc.problems:
            self.found.add_at(problem.mark, problem.path, problem.message, "error")
        if self.found.doc.fatal:
            return None
        if not isinstance(self.found.doc.data, dict):
            what = "empty" if self.found.doc.data is None else "not a mapping"
            self.found.add((), f"the file is {what}: expected a mapping with `accounts`")
            return None
        return self.found.doc.data

    # interpolation

    def _interpolate(self, value: Any, path: YamlPath) -> Any:
        if isinstance(value, dict):
            return {k: self._interpolate(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            if _keeps_text(path) and isinstance(value, int) and not isinstance(value, bool):
                # `accountid: 0123` is YAML 1.1 octal 83: an id is the text as written.
                return self.found.doc.texts.get(path, str(value))
            return value
        secret = (bool(path) and path[-1] == KEY_FIELD) or is_notify_url(path) or is_web_token(path)
        if secret:
            self._collect_secrets(value, path)
        if "$" not in value:
            return value
        return self._interpolate_string(value, path, secret)

    def _collect_secrets(self, value: str, path: YamlPath) -> None:
        """Remember a key's value, and the values of every variable it names, to mask them."""
        if not has_references(value):
            self.report.secrets.add(value)
            self.literal_keys.add(path)
        # Even when interpolation fails half-way, the variables it names hold key material.
        for name in variable_names(value):
            self.report.secrets.add(self.environ.get(name, ""))

    def _interpolate_string(self, value: str, path: YamlPath, secret: bool) -> Any:
        try:
            result = interpolate(value, self.environ, missing=self.missing_env)
        except InterpolationError as error:
            self.found.add(path, str(error))
            return value
        if secret:
            self.report.secrets.add(result.value)
        if self.found.doc.styles.get(path) is None and _typed_after_interpolation(path):
            # An unquoted value is typed as if the result had been written:
            # ``volume: ${VOLUME:-0.01}`` is then the number 0.01, as users expect.
            return typed(result.value)
        return result.value

    def _check_finite(self, value: Any, path: YamlPath) -> None:
        """Refuse NaN and infinity (`.nan`, `.inf`) anywhere: NaN passes every bound the
        schema sets, and neither is JSON, so `--json` would print an invalid document."""
        if isinstance(value, float) and not math.isfinite(value):
            self.found.add(path, f"must be a finite number, not {show_value(value)}")
        elif isinstance(value, dict):
            for key, child in value.items():
                self._check_finite(child, (*path, key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                self._check_finite(child, (*path, index))

    # the schema

    def _check_schema(self, data: dict[str, Any]) -> None:
        add_schema_errors(
            self.found,
            _validator().iter_errors(data),
            missing=lambda key: f"missing required key '{key}'",
        )

    # defaults

    def _merged_accounts(self, data: dict[str, Any]) -> list[AccountEntry]:
        defaults = data.get("defaults")
        defaults = defaults if isinstance(defaults, dict) else {}
        entries = data.get("accounts")
        if not isinstance(entries, list):
            return []
        accounts = []
        for index, entry in enumerate(entries):
            if isinstance(entry, dict):
                accounts.append(AccountEntry.merge(index, defaults, entry))
        for account in accounts:
            for key in schema.required_account_fields():
                if key not in account.values:
                    self.found.add_missing(
                        account.path, f"missing required key '{key}' (set it here or in defaults)"
                    )
        return accounts

    # semantic rules

    def _check_semantics(self, accounts: list[AccountEntry]) -> None:
        self._check_unique_names(accounts)
        check_service_names(accounts, self.found)
        self._check_bindings(accounts)
        config_dir = self.path.resolve().parent  # where a strategy module is looked for
        for account in accounts:
            self._check_interval(account)
            self._check_max_volume(account)
            check_strategy(account, self.found, config_dir)
            self._check_api_key(account)
            if account.values.get("runmode") == "livetrade" and not self.found.is_bad(
                account.origin("runmode")
            ):
                self.found.add(
                    account.origin("runmode"),
                    "livetrade: this account trades real money; `multirun start` needs --live",
                    "note",
                )

    def _check_unique_names(self, accounts: list[AccountEntry]) -> None:
        seen: dict[str, AccountEntry] = {}
        for account in accounts:
            if not account.usable("name", self.found):
                continue
            name = account.values["name"]
            if name in seen:
                first = self.found.doc.mark(seen[name].origin("name")).line
                self.found.add(
                    account.origin("name"), f"duplicate name '{name}' (first at line {first})"
                )
            else:
                seen[name] = account

    def _check_bindings(self, accounts: list[AccountEntry]) -> None:
        seen: dict[tuple[str, ...], AccountEntry] = {}
        for account in accounts:
            if not all(account.usable(key, self.found) for key in BINDING_FIELDS):
                continue
            binding = tuple(str(account.values[key]) for key in BINDING_FIELDS)
            if binding not in seen:
                seen[binding] = account
                continue
            first = seen[binding]
            user, runmode, accountid = binding
            self.found.add(
                account.origin("accountid"),
                f"ALGOGENE account {accountid!s} ({runmode}, user {user}) is already bound to "
                f"'{first.values.get('name', first.path)}' (line "
                f"{self.found.doc.mark(first.path).line}): one strategy per account",
            )

    def _check_interval(self, account: AccountEntry) -> None:
        """The bounds the schema cannot set on a duration string (``8d``).

        The seconds parsed are kept in the entry: the watchdog check and the spec read them.
        """
        for key in ("interval", "tick_timeout"):
            if account.usable(key, self.found):
                try:
                    account.seconds[key] = parse_interval(account.values[key])
                except ValueError as error:
                    self.found.add(account.origin(key), str(error))

    def _check_max_volume(self, account: AccountEntry) -> None:
        """The ``max_volume`` guardrail: a volume above it is a typo until proven otherwise."""
        if not (account.usable("volume", self.found) and account.usable("max_volume", self.found)):
            return
        volume, limit = account.values["volume"], account.values["max_volume"]
        if volume > limit:
            where = format_path(account.origin("max_volume"))
            self.found.add(
                account.origin("volume"),
                f"volume {volume:g} is above max_volume {limit:g} ({where}): "
                "a typo? raise max_volume if you mean it",
            )

    def _check_api_key(self, account: AccountEntry) -> None:
        origin = account.origin("api_key")
        if origin in self.literal_keys and not self.found.is_bad(origin):
            self.found.add(
                origin,
                "api_key is written in the file: reference an environment variable instead, "
                "e.g. ${ALGOGENE_API_KEY}",
                "warning",
            )

    def _check_web_token(self) -> None:
        if WEB_TOKEN in self.literal_keys and not self.found.is_bad(WEB_TOKEN):
            self.found.add(
                WEB_TOKEN,
                "web.token is written in the file: reference an environment variable "
                "instead, e.g. ${MULTIRUN_WEB_TOKEN}",
                "warning",
            )

    # specs

    def _build(self, data: dict[str, Any], accounts: list[AccountEntry]) -> RunnerSpec:
        values = {**schema.runner_defaults(), **data}
        config_dir = self.path.resolve().parent
        state_dir = Path(os.path.expanduser(values["state_dir"]))
        return RunnerSpec(
            path=self.path.resolve(),
            server=str(values["server"]).rstrip("/"),
            state_dir=(config_dir / state_dir).resolve(),
            accounts=tuple(_account_spec(a) for a in accounts),
            version=int(values["version"]),
            stop_timeout_s=float(values["stop_timeout"]),
            watchdog_timeout_s=parse_interval(values["watchdog_timeout"]),
            tick_spread_s=float(values["tick_spread"]),
            notify=tuple(_notify_target(t) for t in values.get("notify") or ()),
            metrics=None
            if "metrics" not in data
            else MetricsSpec.parse(
                data["metrics"]["listen"], data["metrics"].get("allow_remote") is True
            ),
            web=None if "web" not in data else _web_spec(data["web"]),
            risk=None if "risk" not in data else RiskSpec.from_values(data["risk"]),
        )


def _account_spec(account: AccountEntry) -> AccountSpec:
    """The spec of a checked account; a field it leaves out takes the schema's default."""
    values = {**schema.account_defaults(), **account.values}
    if account.interval_s is None:
        raise ValueError(f"{account.path}: interval was not checked")  # a bug, not bad input
    return AccountSpec(
        name=values["name"],
        user=values["user"],
        api_key=Secret(values["api_key"]),
        accountid=str(values["accountid"]),
        runmode=values["runmode"],
        strategy=values["strategy"],
        instrument=values["instrument"],
        volume=float(values["volume"]),
        interval_s=account.interval_s,
        tick_timeout_s=account.tick_timeout_s,
        params=freeze(values.get("params") or {}),
        on_stop=values["on_stop"],
        enabled=values["enabled"],
        guardrails=Guardrails.from_values(values),
        risk=None if values.get("risk") is None else RiskSpec.from_values(values["risk"]),
        trading_hours=None
        if values.get("trading_hours") is None
        else TradingHours.from_values(values["trading_hours"]),
    )


def _web_spec(entry: dict[str, Any]) -> WebSpec:
    return WebSpec.parse(entry.get("listen"), entry.get("token"), entry.get("read_only") is True)


def _notify_target(entry: dict[str, Any]) -> NotifyTarget:
    return NotifyTarget(
        url=Secret(str(entry["url"])),
        format=str(entry.get("format", "json")),
        events=tuple(entry.get("events") or ()),
    )


def _our_field(path: YamlPath) -> str | None:
    """The runner field ``path`` names (None inside a strategy's params)."""
    if not path or "params" in path[:-1] or not isinstance(path[-1], str):
        return None
    return path[-1]


def _typed_after_interpolation(path: YamlPath) -> bool:
    """Text fields stay strings (a numeric user id stays "12345"); others are typed."""
    return _our_field(path) not in schema.text_fields()


def _keeps_text(path: YamlPath) -> bool:
    return schema.text_fields().get(_our_field(path) or "", False)
