"""Strategies for the invalid-config corpus (this directory is on the import path)."""

from __future__ import annotations

from typing import Any


class Threshold:
    """Buys above ``level``, sells below; declares its params."""

    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["level"],
        "properties": {
            "level": {"type": "number", "exclusiveMinimum": 0},
            "window": {"type": "integer", "minimum": 2},
        },
    }

    def __init__(self, params: dict[str, Any]) -> None:
        self.level = params["level"]

    def on_tick(self, ctx: Any) -> str | None:
        return None


class BadSchema:
    """Declares a params schema that is not a valid JSON Schema."""

    params_schema = {"type": "no-such-type"}

    def on_tick(self, ctx: Any) -> None:
        return None


def flat(ctx: Any) -> str:
    """A plain function strategy with no params schema."""
    return "FLAT"
