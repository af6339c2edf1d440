"""The JSON Schema of runner.yaml: where the file is, what it says, the defaults it declares.

The schema is the one place a default is written: :mod:`multirun.config.specs` and
:mod:`multirun.config.loader` take theirs from here. The file is read once per process.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from multirun.core.errors import UsageError

FILE_NAME = "runner.schema.json"


def path() -> Path:
    """The schema file: inside an installed wheel, else in the source tree."""
    package = Path(__file__).resolve().parents[1]  # multirun/, this file is config/schema.py
    # Check the wheel layout first: beside an installed package, ../schemas could be
    # some other distribution's directory.
    for candidate in (package / "_schemas" / FILE_NAME, package.parent / "schemas" / FILE_NAME):
        if candidate.is_file():
            return candidate
    raise UsageError(f"cannot find {FILE_NAME}: multirun is not installed correctly")


@cache
def _text() -> str:
    return path().read_text(encoding="utf-8")


@cache
def _document() -> dict[str, Any]:
    """The parsed schema, shared: never handed out, never modified."""
    loaded: dict[str, Any] = json.loads(_text())
    return loaded


def document() -> dict[str, Any]:
    """The JSON Schema of runner.yaml (a fresh copy: callers may modify it)."""
    fresh: dict[str, Any] = json.loads(_text())
    return fresh


def runner_fields() -> dict[str, dict[str, Any]]:
    """(name -> schema) of every top-level field, in schema order (a fresh copy)."""
    fields: dict[str, dict[str, Any]] = document()["properties"]
    return fields


def account_fields() -> dict[str, dict[str, Any]]:
    """(name -> schema) of every account field, in schema order (a fresh copy)."""
    fields: dict[str, dict[str, Any]] = runner_fields()["accounts"]["items"]["properties"]
    return fields


def required_account_fields() -> tuple[str, ...]:
    """Fields every account must have once ``defaults`` are merged in."""
    return tuple(_document()["$defs"]["resolvedAccount"]["required"])


@cache
def text_fields() -> dict[str, bool]:
    """Fields that take text: name -> whether they take a number too (accountid)."""
    props = {**runner_fields(), **account_fields()}
    types = {name: prop.get("type") for name, prop in props.items()}
    return {
        name: isinstance(kind, list)
        for name, kind in types.items()
        if kind == "string" or (isinstance(kind, list) and "string" in kind)
    }


@cache
def _defaults(*where: str) -> dict[str, Any]:
    properties: dict[str, Any] = _document()
    for key in where:
        properties = properties[key]
    return {name: prop["default"] for name, prop in properties.items() if "default" in prop}


def runner_defaults() -> dict[str, Any]:
    """The schema's ``default`` of each top-level field that has one (``server``, ...)."""
    return dict(_defaults("properties"))


def web_defaults() -> dict[str, Any]:
    """The schema's ``default`` of each ``web:`` field that has one (``listen``, ...)."""
    return dict(_defaults("properties", "web", "properties"))


def account_defaults() -> dict[str, Any]:
    """The schema's ``default`` of each account field that has one (``on_stop``, ...)."""
    return dict(_defaults("properties", "accounts", "items", "properties"))
