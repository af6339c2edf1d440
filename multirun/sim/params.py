"""Request parameters: reading, checking and the simulator's error replies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Params = Mapping[str, Any]


class ApiFail(Exception):
    """An error reply: HTTP ``status`` with ``{"status": "FAIL", "err_msg": msg}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, str]:
        return {"status": "FAIL", "err_msg": self.message}


def text(params: Params, name: str, *, required: bool = False) -> str:
    """A parameter as a string; "" when absent (400 if ``required``)."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ApiFail(400, f"missing parameter: {name}")
        return ""
    if isinstance(value, list | dict):
        raise ApiFail(400, f"invalid parameter: {name}")
    return str(value).strip()


def number(
    params: Params, name: str, *, required: bool = False, positive: bool = False
) -> float | None:
    """A parameter as a float >= 0 (> 0 if ``positive``); None when absent."""
    raw = params.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if required:
            raise ApiFail(400, f"missing parameter: {name}")
        return None
    if isinstance(raw, bool):
        raise ApiFail(400, f"invalid parameter: {name} must be a number")
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond float
        raise ApiFail(400, f"invalid parameter: {name} must be a number") from None
    if not math.isfinite(value):
        raise ApiFail(400, f"invalid parameter: {name} must be a finite number")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ApiFail(400, f"invalid parameter: {name} must be {bound}")
    return value


def buysell(params: Params) -> int:
    """``BUY``/``SELL`` (any case) or 1/-1, as 1 or -1."""
    raw = params.get("buysell")
    if raw is None or raw == "":
        raise ApiFail(400, "missing parameter: buysell")
    word = str(raw).strip().upper()
    if word in ("BUY", "1", "1.0"):
        return 1
    if word in ("SELL", "-1", "-1.0"):
        return -1
    raise ApiFail(400, "invalid parameter: buysell must be BUY or SELL")


def trade_id(params: Params, name: str = "tradeID") -> int:
    raw = text(params, name, required=True)
    try:
        return int(raw)
    except ValueError:
        raise ApiFail(400, f"invalid parameter: {name} must be a trade id") from None


def trade_ids(params: Params, name: str = "tradeIDs") -> list[int]:
    """A comma-separated list (or a JSON list, or one number) of trade ids."""
    if not present(params, name):
        raise ApiFail(400, f"missing parameter: {name}")
    raw = params.get(name)
    items = raw if isinstance(raw, list) else str(raw).split(",")
    ids: list[int] = []
    for item in items:
        piece = str(item).strip().strip("'\"")
        if not piece:
            continue
        try:
            ids.append(int(piece))
        except ValueError:
            raise ApiFail(400, f"invalid parameter: {name} must list trade ids") from None
    if not ids:
        raise ApiFail(400, f"missing parameter: {name}")
    return ids


def present(params: Params, name: str) -> bool:
    value = params.get(name)
    return value is not None and value != "" and value != []
