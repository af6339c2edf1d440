"""runner.yaml: load it, check it, and turn it into typed, immutable specs.

The pipeline is: safe YAML with positions (:mod:`multirun.yamlload`), environment
interpolation in string values (:mod:`multirun.interpolate`), JSON Schema
(``schemas/runner.schema.json``), ``defaults`` merged into each account, semantic rules,
then :class:`~multirun.specs.RunnerSpec`. Every step collects problems instead of
stopping at the first, so ``multirun validate`` reports them all at once, each with
file, line, column and a path like ``accounts[1].volume``.

No message carries a secret: API keys (and the variables they come from) are never
quoted, and every message is scrubbed of them before it leaves this module.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from multirun import strategies
from multirun.errors import ConfigError, StrategyError, UsageError
from multirun.interpolate import InterpolationError, has_references, interpolate
from multirun.specs import (
    DEFAULT_SERVER,
    MASK,
    MAX_INTERVAL_S,
    MIN_SECRET_LEN,
    AccountSpec,
    Guardrails,
    RunnerSpec,
    Secret,
    format_interval,
    freeze,
    parse_interval,
)
from multirun.yamlload import MAX_BYTES, Document, Mark, load_text

Severity = Literal["error", "warning", "note"]
YamlPath = tuple[str | int, ...]

SCHEMA_NAME = "runner.schema.json"
DEFAULT_STATE_DIR = ".multirun"
DEFAULT_STOP_TIMEOUT = 30.0
SECRET_FIELDS = frozenset({"api_key"})
BINDING_FIELDS = ("user", "runmode", "accountid")
_VARIABLE_NAME = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


# --- the schema ---------------------------------------------------------------


def schema_path() -> Path:
    """The schema file: inside an installed wheel, else in the source tree."""
    package = Path(__file__).resolve().parent
    # Check the wheel layout first: beside an installed package, ../schemas could be
    # some other distribution's directory.
    for candidate in (package / "_schemas" / SCHEMA_NAME, package.parent / "schemas" / SCHEMA_NAME):
        if candidate.is_file():
            return candidate
    raise UsageError(f"cannot find {SCHEMA_NAME}: multirun is not installed correctly")


@cache
def _schema_text() -> str:
    return schema_path().read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    """The JSON Schema of runner.yaml (a fresh copy: callers may modify it)."""
    return json.loads(_schema_text())


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def required_account_fields() -> tuple[str, ...]:
    """Fields every account must have once ``defaults`` are merged in."""
    return tuple(schema()["$defs"]["resolvedAccount"]["required"])


# --- problems and reports ----------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding, located in the file."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        label = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {label}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class Report:
    """The outcome of :func:`validate`: errors, warnings (and notes), and the spec if valid."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    spec: RunnerSpec | None = None
    # Every key value met (and the variables they came from): nothing shown may hold one.
    secrets: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.problems and self.spec is not None

    def rows(self) -> list[dict[str, Any]]:
        """The accounts as ``validate`` shows them: a key used as another value is masked too."""
        if self.spec is None:
            return []
        return [
            {k: scrub(v, self.secrets) if isinstance(v, str) else v for k, v in row.items()}
            for row in map(account_row, self.spec.accounts)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
            "accounts": self.rows(),
        }


def account_row(account: AccountSpec) -> dict[str, Any]:
    """What ``validate`` shows of an account: no secret, only its masked hint."""
    return {
        "name": account.name,
        "runmode": account.runmode,
        "accountid": account.accountid,
        "strategy": account.strategy,
        "instrument": account.instrument,
        "volume": account.volume,
        "interval": format_interval(account.interval_s),
        "enabled": account.enabled,
        "api_key": account.api_key.masked(),
    }


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it masked.

    A value shorter than a key can be (the schema refuses it, yet the report still names
    it) is masked only as a whole word: masked anywhere, it would eat ordinary words.
    """
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", MASK, text)
    return text


def format_path(path: YamlPath) -> str:
    """``("accounts", 1, "volume")`` -> ``accounts[1].volume``; the root is ``(root)``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "a").replace("-", "a").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "(root)"


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
) -> Report:
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
        self.file = str(path)
        self.raw = raw
        self.environ = environ
        self.missing_env = missing_env
        self.strict = strict
        self.doc = Document()
        self.report = Report(self.file)
        self.bad_paths: set[YamlPath] = set()
        self.literal_keys: set[YamlPath] = set()

    # reporting

    def add(
        self, path: YamlPath, message: str, severity: Severity = "error", *, at_key: bool = False
    ) -> None:
        mark = self.doc.key_mark(path) if at_key else self.doc.mark(path)
        self.add_at(mark, path, message, severity)

    def add_missing(self, path: YamlPath, message: str) -> None:
        """A problem with a mapping as a whole: its other values are still worth checking."""
        mark = self.doc.mark(path)
        self.add_at(mark, path, message, "error", taints=False)

    def add_at(
        self, mark: Mark, path: YamlPath, message: str, severity: Severity, *, taints: bool = True
    ) -> None:
        if severity == "warning" and self.strict:
            severity = "error"
        # One problem, one line: an imported strategy's error may span several.
        message = " ".join(message.splitlines())
        problem = Problem(self.file, mark.line, mark.column, format_path(path), message, severity)
        target = self.report.problems if severity == "error" else self.report.warnings
        if problem not in target:
            target.append(problem)
        if severity == "error" and taints:
            self.bad_paths.add(path)

    def is_bad(self, path: YamlPath) -> bool:
        return any(path[:end] in self.bad_paths for end in range(len(path) + 1))

    # the pipeline

    def run(self) -> Report:
        data = self._parse()
        if isinstance(data, dict):
            data = self._interpolate(data, ())
            self._check_finite(data, ())
            self._check_schema(data)
            accounts = self._merged_accounts(data)
            self._check_semantics(accounts)
            if not self.report.problems:
                self.report.spec = self._build(data, accounts)
        self._scrub()
        for found in (self.report.problems, self.report.warnings):
            found.sort(key=lambda p: (p.line, p.column))
        return self.report

    def _parse(self) -> Any:
        if len(self.raw) > MAX_BYTES:
            limit = f"{MAX_BYTES // (1024 * 1024)} MiB"
            self.add_at(
                Mark(1, 1), (), f"file is larger than {limit}: refusing to load it", "error"
            )
            return None
        try:
            text = self.raw.decode("utf-8")
        except UnicodeDecodeError as error:
            # Counted in characters, as YAML's positions are: what precedes is valid UTF-8.
            valid = self.raw[: error.start].decode("utf-8")
            line_start = valid.rfind("\n") + 1
            mark = Mark(valid.count("\n") + 1, len(valid) - line_start + 1)
            self.add_at(mark, (), "file is not valid UTF-8 text", "error")
            return None
        self.doc = load_text(text)
        for problem in self.doc.problems:
            self.add_at(problem.mark, problem.path, problem.message, "error")
        if self.doc.fatal:
            return None
        if not isinstance(self.doc.data, dict):
            what = "empty" if self.doc.data is None else "not a mapping"
            self.add((), f"the file is {what}: expected a mapping with `accounts`")
            return None
        return self.doc.data

    # interpolation

    def _interpolate(self, value: Any, path: YamlPath) -> Any:
        if isinstance(value, dict):
            return {k: self._interpolate(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            if _keeps_text(path) and isinstance(value, int) and not isinstance(value, bool):
                # `accountid: 0123` is YAML 1.1 octal 83: an id is the text as written.
                return self.doc.texts.get(path, str(value))
            return value
        secret = bool(path) and path[-1] in SECRET_FIELDS
        if secret:
            self._collect_secrets(value, path)
        if "$" not in value:
            return value
        return self._interpolate_string(value, path, secret)

    def _collect_secrets(self, value: str, path: YamlPath) -> None:
        """Remember a key's value, and the values of every variable it names, to scrub them."""
        if not has_references(value):
            self.report.secrets.add(value)
            self.literal_keys.add(path)
        # Even when interpolation fails half-way, the variables it names hold key material.
        for name in _VARIABLE_NAME.findall(value):
            self.report.secrets.add(self.environ.get(name, ""))

    def _interpolate_string(self, value: str, path: YamlPath, secret: bool) -> Any:
        try:
            result = interpolate(value, self.environ, missing=self.missing_env)
        except InterpolationError as error:
            self.add(path, str(error))
            return value
        if secret:
            self.report.secrets.add(result.value)
        if self.doc.styles.get(path) is None and _typed_after_interpolation(path):
            return _retype(result.value)
        return result.value

    def _check_finite(self, value: Any, path: YamlPath) -> None:
        """Refuse NaN and infinity (`.nan`, `.inf`) anywhere: NaN passes every bound the
        schema sets, and neither is JSON, so `--json` would print an invalid document."""
        if isinstance(value, float) and not math.isfinite(value):
            self.add(path, f"must be a finite number, not {_show(value)}")
        elif isinstance(value, dict):
            for key, child in value.items():
                self._check_finite(child, (*path, key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                self._check_finite(child, (*path, index))

    # the schema

    def _check_schema(self, data: dict[str, Any]) -> None:
        for error in _validator().iter_errors(data):
            path: YamlPath = tuple(error.absolute_path)
            if self._is_news(path, error):
                self._schema_error(path, error)

    def _is_news(self, path: YamlPath, error: jsonschema.ValidationError) -> bool:
        """One message per value (the first, its type, wins); keys are always reported."""
        return error.validator in ("additionalProperties", "required") or not self.is_bad(path)

    def _schema_error(self, path: YamlPath, error: jsonschema.ValidationError) -> None:
        if not self._key_error(path, error, lambda key: f"missing required key '{key}'"):
            self.add(path, self._describe(path, error))

    def _key_error(
        self, path: YamlPath, error: jsonschema.ValidationError, missing: Callable[[str], str]
    ) -> bool:
        """Report an unknown or missing key at its own place; False for other errors."""
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            for key in _extra_keys(error):
                self.add((*path, key), _unknown_key(key, allowed), at_key=True)
            return True
        if error.validator == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    self.add_missing(path, missing(key))
            return True
        return False

    def _describe(self, path: YamlPath, error: jsonschema.ValidationError) -> str:
        shown = self._quotable(path, error.instance)
        return describe_error(error, field=_field_name(path), instance=shown)

    def _quotable(self, path: YamlPath, value: Any) -> Any:
        """``value`` if a message may quote it, else None: not a key, nor text holding one.

        Checked here, not left to :meth:`_scrub`: a long value is quoted cut short, and a
        key cut in two is no longer masked whole.
        """
        if _is_secret(path) or scrub(str(value), self.report.secrets) != str(value):
            return None
        return value

    # defaults

    def _merged_accounts(self, data: dict[str, Any]) -> list[_Account]:
        defaults = data.get("defaults")
        defaults = defaults if isinstance(defaults, dict) else {}
        entries = data.get("accounts")
        if not isinstance(entries, list):
            return []
        accounts = []
        for index, entry in enumerate(entries):
            if isinstance(entry, dict):
                accounts.append(_Account.merge(index, defaults, entry))
        for account in accounts:
            for key in required_account_fields():
                if key not in account.values:
                    self.add_missing(
                        account.path, f"missing required key '{key}' (set it here or in defaults)"
                    )
        return accounts

    # semantic rules

    def _check_semantics(self, accounts: list[_Account]) -> None:
        self._check_unique_names(accounts)
        self._check_bindings(accounts)
        for account in accounts:
            self._check_interval(account)
            self._check_strategy(account)
            self._check_api_key(account)
            if account.values.get("runmode") == "livetrade" and not self.is_bad(
                account.origin("runmode")
            ):
                self.add(
                    account.origin("runmode"),
                    "livetrade: this account trades real money; `multirun start` needs --live",
                    "note",
                )

    def _usable(self, account: _Account, key: str) -> bool:
        return key in account.values and not self.is_bad(account.origin(key))

    def _check_unique_names(self, accounts: list[_Account]) -> None:
        seen: dict[str, _Account] = {}
        for account in accounts:
            if not self._usable(account, "name"):
                continue
            name = account.values["name"]
            if name in seen:
                first = self.doc.mark(seen[name].origin("name")).line
                self.add(account.origin("name"), f"duplicate name '{name}' (first at line {first})")
            else:
                seen[name] = account

    def _check_bindings(self, accounts: list[_Account]) -> None:
        seen: dict[tuple[str, ...], _Account] = {}
        for account in accounts:
            if not all(self._usable(account, key) for key in BINDING_FIELDS):
                continue
            binding = tuple(str(account.values[key]) for key in BINDING_FIELDS)
            if binding not in seen:
                seen[binding] = account
                continue
            first = seen[binding]
            user, runmode, accountid = binding
            self.add(
                account.origin("accountid"),
                f"ALGOGENE account {accountid!s} ({runmode}, user {user}) is already bound to "
                f"'{first.values.get('name', first.path)}' (line "
                f"{self.doc.mark(first.path).line}): one strategy per account",
            )

    def _check_interval(self, account: _Account) -> None:
        """The bounds the schema cannot set on a duration string (``8d``)."""
        if self._usable(account, "interval"):
            try:
                parse_interval(account.values["interval"])
            except ValueError as error:
                self.add(account.origin("interval"), str(error))

    def _check_strategy(self, account: _Account) -> None:
        if not self._usable(account, "strategy"):
            return
        ref = account.values["strategy"]
        try:
            # A strategy module that prints while imported must not corrupt `--json` output.
            with contextlib.redirect_stdout(sys.stderr):
                strategy = strategies.resolve(ref, self.path.resolve().parent)
        except StrategyError as error:
            self.add(account.origin("strategy"), str(error))
            return
        except SystemExit:  # e.g. a script's argparse run at import: not ours to exit on
            self.add(account.origin("strategy"), f"strategy {ref!r} called exit while imported")
            return
        declared = strategies.params_schema(strategy)
        params_broken = "params" in account.values and not self._usable(account, "params")
        if declared is not None and not params_broken:
            self._check_params(account, ref, declared)

    def _check_params(self, account: _Account, ref: str, declared: dict[str, Any]) -> None:
        try:
            validator_class = jsonschema.validators.validator_for(
                declared, default=jsonschema.Draft202012Validator
            )
            validator_class.check_schema(declared)
        except jsonschema.SchemaError as error:
            self.add(
                account.origin("strategy"),
                f"strategy {ref!r} declares an invalid params_schema: {error.message}",
            )
            return
        params = account.values.get("params", {})
        base = account.origin("params")

        def missing(key: str) -> str:
            return f"missing required param '{key}' for strategy {ref!r}"

        for error in validator_class(declared).iter_errors(params):
            path = (*base, *error.absolute_path)
            if self._is_news(path, error) and not self._key_error(path, error, missing):
                shown = self._quotable(path, error.instance)
                self.add(path, describe_error(error, field=None, instance=shown))

    def _check_api_key(self, account: _Account) -> None:
        origin = account.origin("api_key")
        if origin in self.literal_keys and not self.is_bad(origin):
            self.add(
                origin,
                "api_key is written in the file: reference an environment variable instead, "
                "e.g. ${ALGOGENE_API_KEY}",
                "warning",
            )

    # specs

    def _build(self, data: dict[str, Any], accounts: list[_Account]) -> RunnerSpec:
        config_dir = self.path.resolve().parent
        state_dir = Path(os.path.expanduser(data.get("state_dir", DEFAULT_STATE_DIR)))
        return RunnerSpec(
            path=self.path.resolve(),
            server=str(data.get("server", DEFAULT_SERVER)).rstrip("/"),
            state_dir=(config_dir / state_dir).resolve(),
            accounts=tuple(_account_spec(a.values) for a in accounts),
            version=int(data.get("version", 1)),
            stop_timeout_s=float(data.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
        )

    def _scrub(self) -> None:
        """Last line of defence: no message may contain a secret value."""
        for target in (self.report.problems, self.report.warnings):
            for index, problem in enumerate(target):
                message = scrub(problem.message, self.report.secrets)
                if message != problem.message:
                    target[index] = Problem(**{**problem.to_dict(), "message": message})


@dataclass
class _Account:
    """An account entry with ``defaults`` merged in, remembering where each value is written."""

    path: YamlPath
    values: dict[str, Any]
    origins: dict[str, YamlPath]

    @classmethod
    def merge(cls, index: int, defaults: dict[str, Any], entry: dict[str, Any]) -> _Account:
        path: YamlPath = ("accounts", index)
        # Whole values: an account's `params` replaces the default params, it is not merged.
        origins = {key: ("defaults", key) for key in defaults}
        origins.update({key: (*path, key) for key in entry})
        return cls(path, {**defaults, **entry}, origins)

    def origin(self, key: str) -> YamlPath:
        return self.origins.get(key, (*self.path, key))


def _account_spec(values: dict[str, Any]) -> AccountSpec:
    return AccountSpec(
        name=values["name"],
        user=values["user"],
        api_key=Secret(values["api_key"]),
        accountid=str(values["accountid"]),
        runmode=values["runmode"],
        strategy=values["strategy"],
        instrument=values["instrument"],
        volume=float(values["volume"]),
        interval_s=parse_interval(values["interval"]),
        params=freeze(values.get("params") or {}),
        on_stop=values.get("on_stop", "close"),
        enabled=values.get("enabled", True),
        guardrails=Guardrails(
            # int(): JSON Schema's integers include 2.0
            **{k: int(values[k]) for k in Guardrails.__dataclass_fields__ if k in values}
        ),
    )


# --- messages -----------------------------------------------------------------------

_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}

# Pattern and anyOf failures say nothing useful by themselves ("does not match '^[a-z]...'").
FIELD_HINTS = {
    "name": "must be a lower-case slug: a letter, then letters, digits, '-' or '_' (max 32)",
    "interval": (
        "must be a duration like 30s, 1m, 5m, 1h, 1d, or whole seconds >= 1 "
        f"(at most {format_interval(MAX_INTERVAL_S)})"
    ),
    "server": "must be `sim` or an http(s) URL such as https://algogene.com/rest/v1",
    "instrument": "must be an instrument symbol such as BTCUSD (letters, digits, '.', '_', '-')",
}


def describe_error(error: jsonschema.ValidationError, *, field: str | None, instance: Any) -> str:
    """A short message for a schema error; quotes the value only when ``instance`` is given."""
    kind, expected = error.validator, error.validator_value
    got = "" if instance is None else f", not {_show(instance)}"
    if kind in ("pattern", "anyOf", "oneOf") and field in FIELD_HINTS:
        return FIELD_HINTS[field] + got
    if kind == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        return "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in types) + got
    if kind == "enum":
        return "must be one of: " + ", ".join(str(v) for v in expected) + got
    if kind == "const":
        return f"must be {_show(expected)}{got}"
    simple = {
        "exclusiveMinimum": f"must be greater than {expected}",
        "minimum": f"must be at least {expected}",
        "exclusiveMaximum": f"must be less than {expected}",
        "maximum": f"must be at most {expected}",
        "minItems": "must not be empty" if expected == 1 else f"needs at least {expected} items",
        "maxItems": f"must have at most {expected} items",
        "minLength": "must not be empty" if expected == 1 else f"needs {expected}+ characters",
        "maxLength": f"must be at most {expected} characters",
        "pattern": f"must match the pattern {expected}",
    }
    if kind in ("minItems", "minLength") and expected == 1:
        return simple[kind]  # "must not be empty, not []" says nothing more
    if kind in simple:
        return simple[kind] + got
    return error.message if instance is not None else f"is not valid ({kind})"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + '..."'


def _extra_keys(error: jsonschema.ValidationError) -> list[str]:
    """The keys an ``additionalProperties: false`` error is about."""
    known = error.schema.get("properties", {})
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
    return sorted(
        key
        for key in error.instance
        if key not in known and not any(p.search(key) for p in patterns)
    )


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
    return f"unknown key '{key}' ({hint})"


def _field_name(path: YamlPath) -> str | None:
    return path[-1] if path and isinstance(path[-1], str) else None


def _is_secret(path: YamlPath) -> bool:
    return any(part in SECRET_FIELDS for part in path if isinstance(part, str))


def _retype(text: str) -> Any:
    """An unquoted value typed after interpolation, as if the result had been written.

    ``volume: ${VOLUME:-0.01}`` is then the number 0.01, as users expect.
    """
    loader = yaml.SafeLoader("")
    tag = loader.resolve(yaml.ScalarNode, text, (True, False))
    if tag == "tag:yaml.org,2002:str" or not text:
        return text
    try:
        return loader.construct_object(yaml.ScalarNode(tag, text))
    except yaml.YAMLError:
        return text


@cache
def _text_fields() -> dict[str, bool]:
    """Fields that take text: name -> whether they take a number too (accountid)."""
    props = {**schema()["properties"], **dict(iter_account_fields())}
    types = {name: prop.get("type") for name, prop in props.items()}
    return {
        name: isinstance(kind, list)
        for name, kind in types.items()
        if kind == "string" or (isinstance(kind, list) and "string" in kind)
    }


def _our_field(path: YamlPath) -> str | None:
    """The runner field ``path`` names (None inside a strategy's params)."""
    if not path or "params" in path[:-1] or not isinstance(path[-1], str):
        return None
    return path[-1]


def _typed_after_interpolation(path: YamlPath) -> bool:
    """Text fields stay strings (a numeric user id stays "12345"); others are typed."""
    return _our_field(path) not in _text_fields()


def _keeps_text(path: YamlPath) -> bool:
    return _text_fields().get(_our_field(path) or "", False)


def iter_account_fields() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, schema) of every account field, in schema order."""
    yield from schema()["properties"]["accounts"]["items"]["properties"].items()


# --- the README's configuration reference -------------------------------------------


def reference_markdown() -> str:
    """The README's configuration reference, generated from the schema (a test keeps it so)."""
    doc = schema()
    required = ", ".join(f"`{name}`" for name in required_account_fields())
    parts = [
        "<!-- generated by multirun.config.reference_markdown(): edit the schema, not this -->",
        "",
        _escape(doc["description"]),
        "",
        "Environment variables, in string values only (Docker Compose semantics, except that",
        "an unset variable with no default is an error, not an empty string):",
        "",
        "| Form | Value |",
        "|---|---|",
        "| `${VAR}` or `$VAR` | the value of `VAR`; an error when it is unset |",
        "| `${VAR:-default}` | `default` when `VAR` is unset or empty |",
        "| `${VAR-default}` | `default` when `VAR` is unset |",
        "| `${VAR:?message}` | an error with `message` when `VAR` is unset or empty |",
        "| `${VAR?message}` | an error with `message` when `VAR` is unset |",
        "| `${VAR:+other}` | `other` when `VAR` is set and not empty, else empty |",
        "| `${VAR+other}` | `other` when `VAR` is set, else empty |",
        "| `$$` | a literal `$` |",
        "",
        "`multirun schema` prints the JSON Schema (draft 2020-12); the first line of",
        "`runner.yaml.example`, `# yaml-language-server: $schema=./schemas/runner.schema.json`,",
        "makes editors complete and check the file as you type. Unknown keys are errors",
        "everywhere. In unquoted values, an interpolated result is typed as YAML would type it",
        "(`volume: ${VOLUME:-0.01}` is a number); quote the value to keep a string.",
        "",
        "### Top level",
        "",
        *_table(doc["properties"], doc.get("required", [])),
        "",
        "### Account fields",
        "",
        "Each entry of `accounts` (and `defaults`, except `name`) may set these. Required",
        f"once `defaults` are merged in: {required}.",
        "",
        *_table(dict(iter_account_fields()), list(required_account_fields())),
    ]
    return "\n".join(parts) + "\n"


def _table(properties: Mapping[str, Any], required: list[str]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        default = "required" if name in required else _default_text(prop)
        description = _escape(f"**{prop['title']}.** {prop['description']}")
        rows.append(f"| `{name}` | {_type_text(prop)} | {default} | {description} |")
    return rows


def _type_text(prop: Mapping[str, Any]) -> str:
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop and "type" not in prop:
        return " or ".join(_type_text(option) for option in prop["anyOf"])
    types = prop.get("type", "any")
    words = {"object": "mapping", "array": "list", "integer": "integer", "number": "number"}
    names = [types] if isinstance(types, str) else types
    text = " or ".join(words.get(t, t) for t in names)
    if "pattern" in prop and prop["pattern"].endswith("[smhd]?$"):
        return "duration string"
    return text


def _default_text(prop: Mapping[str, Any]) -> str:
    if "default" not in prop:
        return ""
    default = prop["default"]
    return f"`{default if isinstance(default, str) else json.dumps(default)}`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
