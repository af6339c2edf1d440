"""What a runner.yaml check finds: located problems, the report, and how each is worded.

:mod:`multirun.config.loader` finds the problems; :mod:`multirun.cli.validate` prints the report.
No message quotes a secret: callers pass ``instance=None`` where a value may hold one
(:func:`holds_secret` says where).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from multirun.config.specs import MAX_INTERVAL_S, RunnerSpec, format_interval
from multirun.config.yamlload import Document, Mark
from multirun.core.redact import Redactor

Severity = Literal["error", "warning", "note"]
YamlPath = tuple[str | int, ...]

KEY_FIELD = "api_key"  # the account field that holds a secret: never quoted, always masked
WEB_TOKEN = ("web", "token")  # the dashboard's token: a secret as well


@dataclass(frozen=True)
class Problem:
    """One finding, located in the file: ``FILE:LINE:COL: PATH: message`` as a line."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        label = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {label}{self.message}"

    def to_dict(self) -> dict[str, str | int]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class CheckReport:
    """The outcome of a check: errors, warnings (and notes), and the spec if valid."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    spec: RunnerSpec | None = None
    # Every key value met (and the variables they came from): nothing shown may hold one.
    secrets: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.problems and self.spec is not None

    def redactor(self) -> Redactor:
        """Masks every key value met so far wherever it would be shown."""
        return Redactor(self.secrets)


class Findings:
    """Collects a check's problems, each located in the document, into its :class:`CheckReport`.

    A value with an error is *bad*: later checks of it, or of anything inside it, stay
    quiet, so each value gets one message (the first, most basic one).
    """

    def __init__(self, file: str, strict: bool) -> None:
        self.file = file
        self.strict = strict  # warnings count as errors
        self.doc = Document()  # where each value is written, once loaded
        self.report = CheckReport(file)
        self.bad_paths: set[YamlPath] = set()

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

    @contextlib.contextmanager
    def as_warnings(self, why: str) -> Iterator[None]:
        """Errors found inside are warnings (``why: message``), and taint nothing.

        Nothing tainted: a value shared through ``defaults`` is still checked for the
        accounts where it is an error.
        """
        before, bad = len(self.report.problems), set(self.bad_paths)
        try:
            yield
        finally:
            found = self.report.problems[before:]
            del self.report.problems[before:]
            self.bad_paths = bad
            for problem in found:
                severity: Severity = "error" if self.strict else "warning"
                demoted = dataclasses.replace(
                    problem, severity=severity, message=f"{why}: {problem.message}"
                )
                target = self.report.problems if self.strict else self.report.warnings
                if demoted not in target:
                    target.append(demoted)

    def is_bad(self, path: YamlPath) -> bool:
        return any(path[:end] in self.bad_paths for end in range(len(path) + 1))

    def finish(self) -> CheckReport:
        """The report, in file order, every message masked of every secret met.

        The last line of defence: no message may contain a secret value.
        """
        redact = self.report.redactor()
        for found in (self.report.problems, self.report.warnings):
            for index, problem in enumerate(found):
                message = redact(problem.message)
                if message != problem.message:
                    found[index] = dataclasses.replace(problem, message=message)
            found.sort(key=lambda p: (p.line, p.column))
        return self.report


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


def holds_secret(path: YamlPath) -> bool:
    """A value no message may quote: an API key (or anything inside one), a notify URL, the
    dashboard's token."""
    return KEY_FIELD in path or is_notify_url(path) or is_web_token(path)


def is_web_token(path: YamlPath) -> bool:
    """``web.token``: who knows it can stop accounts from the dashboard."""
    return tuple(path) == WEB_TOKEN


def is_notify_url(path: YamlPath) -> bool:
    """A ``notify:`` URL: it may hold a token, so it is masked like a key."""
    return len(path) == 3 and path[0] == "notify" and path[2] == "url"


# --- wording -------------------------------------------------------------------------

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
    got = "" if instance is None else f", not {show_value(instance)}"
    if kind in ("pattern", "anyOf", "oneOf") and field in FIELD_HINTS:
        return FIELD_HINTS[field] + got
    if kind == "type":
        types = [expected] if isinstance(expected, str) else _listed(expected)
        return "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in types) + got
    if kind == "enum":
        return "must be one of: " + ", ".join(str(v) for v in _listed(expected)) + got
    if kind == "const":
        return f"must be {show_value(expected)}{got}"
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


def _listed(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def show_value(value: object) -> str:
    """A value as a message quotes it: JSON, cut at 40 characters; a collection by kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + '..."'


def error_schema(error: jsonschema.ValidationError) -> Mapping[str, Any]:
    """The schema (object) an error was raised by; empty for a boolean schema."""
    return error.schema if isinstance(error.schema, Mapping) else {}


def extra_keys(error: jsonschema.ValidationError) -> list[str]:
    """The keys an ``additionalProperties: false`` error is about."""
    schema = error_schema(error)
    known = schema.get("properties", {})
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    instance = error.instance if isinstance(error.instance, dict) else {}
    return sorted(
        key for key in instance if key not in known and not any(p.search(key) for p in patterns)
    )


def unknown_key(key: str, allowed: list[str]) -> str:
    """The message for a key no schema property names, with the closest allowed one."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
    return f"unknown key '{key}' ({hint})"
