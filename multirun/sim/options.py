"""``multirun sim`` flags (as the strings typed) -> a checked :class:`SimConfig`.

Flags arrive as strings so that every bad value gets the same one-line
:class:`UsageError` (exit 2) instead of a usage screen.
"""

from __future__ import annotations

import math
from pathlib import Path

from multirun.core.errors import UsageError
from multirun.sim.faults import (
    MAX_HUGE_MB,
    MAX_LATE_EXEC_S,
    MAX_MS,
    MAX_RETRY_AFTER_S,
    RATE_FIELDS,
    FaultSettings,
)
from multirun.sim.server import SimConfig

RATE_FLAGS = RATE_FIELDS  # one flag per fault kind, in the order faults.py lists them
MS_FLAGS = ("latency_ms", "jitter_ms", "slow_success_ms", "trickle_ms")
MAX_TOKEN_TTL_S = 1e9  # ~31 years: a longer one would expire past the last printable date


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(name: str, raw: str, *, low: float = 0.0, high: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{_flag(name)}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise UsageError(f"{_flag(name)}: {raw!r} must be {bound}")
    return value


def _integer(name: str, raw: str, *, low: int, high: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{_flag(name)}: {raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        raise UsageError(f"{_flag(name)}: {raw!r} is out of range")
    return value


def config_from_options(
    *,
    host: str,
    port: str,
    token_ttl: str,
    seed: str,
    accounts: str | None,
    fill_delay_ms: str,
    one_token_per_user: bool = False,
    **faults: str,
) -> SimConfig:
    """Check every flag; raise UsageError naming the first bad one."""
    if not host.strip():
        raise UsageError("--host: must not be empty")
    defaults = FaultSettings()  # flags not given (callers from before a kind existed)
    named = (*RATE_FLAGS, *MS_FLAGS, "huge_mb", "late_exec_s", "late_exec_ack", "retry_after_s")
    faults = {n: faults.get(n, str(getattr(defaults, n))) for n in named}
    settings: dict[str, object] = {
        **{name: _number(name, faults[name], high=1.0) for name in RATE_FLAGS},
        **{name: _number(name, faults[name], high=MAX_MS) for name in MS_FLAGS},
        "huge_mb": _number("huge_mb", faults["huge_mb"], high=MAX_HUGE_MB),
        "late_exec_s": _number("late_exec_s", faults["late_exec_s"], high=MAX_LATE_EXEC_S),
        "late_exec_ack": _number("late_exec_ack", faults["late_exec_ack"], high=1.0),
        "retry_after_s": _number("retry_after_s", faults["retry_after_s"], high=MAX_RETRY_AFTER_S),
        "one_token_per_user": bool(one_token_per_user),
    }
    ttl = _number("token_ttl", token_ttl, high=MAX_TOKEN_TTL_S)
    if ttl <= 0:
        raise UsageError(f"--token-ttl: {token_ttl!r} must be > 0")
    accounts_path = Path(accounts) if accounts else None
    if accounts_path is not None and not accounts_path.is_file():
        raise UsageError(f"--accounts: {accounts} is not a readable file")
    return SimConfig(
        host=host.strip(),
        port=_integer("port", port, low=0, high=65535),
        seed=_integer("seed", seed, low=0),
        token_ttl_s=ttl,
        accounts_file=accounts_path,
        fill_delay_ms=_number("fill_delay_ms", fill_delay_ms),
        faults=FaultSettings().updated(settings),
    )
