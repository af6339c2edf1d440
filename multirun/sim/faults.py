"""Seeded fault injection for the ``/rest/v1`` endpoints.

One uniform draw per request picks at most one of the rate faults, in this
order: ``drop``, ``error``, ``revoke``, ``malformed``, ``slow_success``,
``trickle``, ``huge`` (the rates stack: their sum is capped at 1). Latency
(``latency_ms`` plus a uniform ``0..jitter_ms``) is added to every request on top
of that.

- drop: the connection is closed with no reply; nothing executed.
- error: a 5xx reply (500, 502, 503 or 504); nothing executed.
- revoke: the caller's token is revoked and the reply is the 401 of a revoked
  token; nothing executed. Only requests carrying a token can draw it.
- malformed: executed, but the 200 reply body is cut short (not valid JSON).
- slow_success: executed, but the reply is held back for ``slow_success_ms``.
- trickle: executed, but the whole reply (status line, headers and body) is written
  one byte every ``trickle_ms``.
- huge: executed, but the 200 reply's JSON is padded with whitespace to ``huge_mb``
  MiB and sent gzip-compressed (a few KiB on the wire: a decompression bomb).

``endpoints`` (a list of names such as ``["open_order"]``) limits all of it to
those endpoints; empty means every ``/rest/v1`` endpoint.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import asdict, dataclass, fields, replace

MAX_MS = 86_400_000.0  # longer waits overflow threading's timeouts and help no test
RATE_FIELDS = (
    "drop_rate",
    "error_rate",
    "revoke_rate",
    "malformed_rate",
    "slow_success_rate",
    "trickle_rate",
    "huge_rate",
)
KIND_OF_RATE = {
    "drop_rate": "drop",
    "error_rate": "error",
    "revoke_rate": "revoke",
    "malformed_rate": "malformed",
    "slow_success_rate": "slow_success",
    "trickle_rate": "trickle",
    "huge_rate": "huge",
}
MAX_HUGE_MB = 1024.0


@dataclass(frozen=True)
class FaultSettings:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    revoke_rate: float = 0.0
    slow_success_rate: float = 0.0
    slow_success_ms: float = 30000.0
    trickle_rate: float = 0.0
    trickle_ms: float = 1000.0  # the pace of a trickling reply: one byte per this
    huge_rate: float = 0.0
    huge_mb: float = 8.0  # the decompressed size of a huge reply
    endpoints: tuple[str, ...] = ()  # faults only these /rest/v1 endpoints; () = all

    def __post_init__(self) -> None:
        names = self.endpoints
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ValueError("endpoints must be a list of endpoint names")
        object.__setattr__(self, "endpoints", tuple(n.strip("/") for n in names))
        for f in fields(self):
            if f.name == "endpoints":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0")
            if f.name.endswith("_rate") and value > 1:
                raise ValueError(f"{f.name} must be between 0 and 1")
            if f.name.endswith("_ms") and value > MAX_MS:
                raise ValueError(f"{f.name} must be at most {MAX_MS:g} (a day)")
            if f.name == "huge_mb" and value > MAX_HUGE_MB:
                raise ValueError(f"huge_mb must be at most {MAX_HUGE_MB:g}")

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["endpoints"] = list(self.endpoints)
        return data

    def applies_to(self, endpoint: str) -> bool:
        return not self.endpoints or endpoint in self.endpoints

    def updated(self, changes: dict[str, object]) -> FaultSettings:
        """A copy with ``changes`` applied; unknown names raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Decision:
    """What to do to one request."""

    delay_s: float = 0.0
    kind: str | None = None  # drop | error | revoke | malformed | slow_success | trickle | huge
    error_status: int = 503
    hold_s: float = 0.0
    trickle_s: float = 0.0  # trickle: seconds per byte
    huge_bytes: int = 0  # huge: the padded body's size


class FaultInjector:
    """Draws a :class:`Decision` per request from a seeded generator."""

    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self._settings = settings
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, changes: dict[str, object]) -> FaultSettings:
        with self._lock:
            self._settings = self._settings.updated(changes)
            return self._settings

    def decide(self, has_token: bool) -> Decision:
        with self._lock:
            s = self._settings
            draw = self._rng.random()
            jitter = self._rng.random() * s.jitter_ms
            status = self._rng.choice((500, 502, 503, 504))
        delay = (s.latency_ms + jitter) / 1000.0
        kind = _pick(s, draw, has_token)
        return Decision(
            delay_s=delay,
            kind=kind,
            error_status=status,
            hold_s=s.slow_success_ms / 1000.0,
            trickle_s=s.trickle_ms / 1000.0,
            huge_bytes=int(s.huge_mb * 1024 * 1024),
        )


def _pick(s: FaultSettings, draw: float, has_token: bool) -> str | None:
    edge = 0.0
    for name in RATE_FIELDS:
        edge += getattr(s, name)
        if draw < edge:
            kind = KIND_OF_RATE[name]
            if kind == "revoke" and not has_token:
                return None
            return kind
    return None
