"""A JSON Schema's errors as located findings: runner.yaml's schema and a strategy's
``params_schema`` alike.

One message per value (the first, most basic one, wins), an unknown or missing key
reported at its own place, and a value quoted only when it holds no secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jsonschema

from multirun.config.findings import (
    Findings,
    YamlPath,
    describe_error,
    error_schema,
    extra_keys,
    holds_secret,
    unknown_key,
)


def add_schema_errors(
    found: Findings,
    errors: Iterable[jsonschema.ValidationError],
    *,
    missing: Callable[[str], str],
    base: YamlPath = (),
    field_hints: bool = True,
) -> None:
    """Add each of ``errors`` to ``found``, located at ``base`` + the error's path.

    ``missing(key)`` words a missing required key. ``field_hints``: word a pattern error by
    the field's name (``interval``: "must be a duration like ..."); off for a strategy's
    params, whose names mean what the strategy says, not what runner.yaml does.
    """
    for error in errors:
        path: YamlPath = (*base, *error.absolute_path)
        if not _is_news(found, path, error) or _add_key_error(found, path, error, missing):
            continue
        field = _field_name(path) if field_hints else None
        shown = _quotable(found, path, error.instance)
        found.add(path, describe_error(error, field=field, instance=shown))


def _is_news(found: Findings, path: YamlPath, error: jsonschema.ValidationError) -> bool:
    """One message per value (the first, its type, wins); keys are always reported."""
    is_key = error.validator in ("additionalProperties", "required")
    return is_key or not found.is_bad(path)


def _add_key_error(
    found: Findings,
    path: YamlPath,
    error: jsonschema.ValidationError,
    missing: Callable[[str], str],
) -> bool:
    """Report an unknown or missing key at its own place; False for other errors."""
    if error.validator == "additionalProperties":
        allowed = sorted(error_schema(error).get("properties", {}))
        for key in extra_keys(error):
            found.add((*path, key), unknown_key(key, allowed), at_key=True)
        return True
    if error.validator == "required":
        required = error.validator_value if isinstance(error.validator_value, list) else []
        present = error.instance if isinstance(error.instance, dict) else {}
        for key in required:
            if key not in present:
                found.add_missing(path, missing(key))
        return True
    return False


def _quotable(found: Findings, path: YamlPath, value: Any) -> Any:
    """``value`` if a message may quote it, else None: not a key, nor text holding one.

    Checked here, not left to :meth:`Findings.finish`: a long value is quoted cut short, and a
    key cut in two is no longer masked whole.
    """
    if holds_secret(path) or found.report.redactor()(str(value)) != str(value):
        return None
    return value


def _field_name(path: YamlPath) -> str | None:
    return path[-1] if path and isinstance(path[-1], str) else None
