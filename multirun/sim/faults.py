"""Seeded fault injection for the ``/rest/v1`` endpoints.

One uniform draw per request picks at most one of the rate faults, in this
order: ``drop``, ``error``, ``revoke``, ``malformed``, ``slow_success``,
``trickle``, ``huge``, ``rate_limit``, then the kinds that mislead (``partial_listing``,
``missing_ref``, ``late_exec``, ``refuse_after_exec``; the rates stack: their sum is
capped at 1). A kind drawn for an endpoint it does not apply to does nothing. The
misleading kinds' own choices come from a second generator, so the draws of a seed
that uses none of them are those it had before they existed. Latency
(``latency_ms`` plus a uniform ``0..jitter_ms``) is added to every request on top
of that.

- drop: the connection is closed with no reply; nothing executed.
- error: a 5xx reply (500, 502, 503 or 504); nothing executed.
- revoke: the caller's token is revoked and the reply is the 401 of a revoked
  token; nothing executed. Only requests carrying a token can draw it.
- rate_limit: a 429 reply with a ``Retry-After: retry_after_s`` header; nothing executed.
- malformed: executed, but the 200 reply body is cut short (not valid JSON).
- slow_success: executed, but the reply is held back for ``slow_success_ms``.
- trickle: executed, but the whole reply (status line, headers and body) is written
  one byte every ``trickle_ms``.
- huge: executed, but the 200 reply's JSON is padded with whitespace to ``huge_mb``
  MiB and sent gzip-compressed (a few KiB on the wire: a decompression bomb).
- partial_listing (``opened_trades``, ``pending_trades``): the listing omits some or all
  of the account's trades (half the time none is listed).
- missing_ref (``opened_trades``, ``pending_trades``): some listed trades (at least one)
  lack their ``order_Ref`` field.
- late_exec (``open_order``): the order is taken on ``late_exec_s`` seconds later (it is
  in no listing before then); the reply is held that long (a share ``late_exec_ack``
  of them) or dropped at once.
- refuse_after_exec (``open_order``): executed, then the caller's token is revoked and
  the reply is the 401 of a revoked token.

``one_token_per_user`` is a policy, not a draw: a new session of a user revokes that
user's earlier tokens.

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
    "rate_limit_rate",
    "partial_listing_rate",
    "missing_ref_rate",
    "late_exec_rate",
    "refuse_after_exec_rate",
)
KIND_OF_RATE = {
    "drop_rate": "drop",
    "error_rate": "error",
    "revoke_rate": "revoke",
    "malformed_rate": "malformed",
    "slow_success_rate": "slow_success",
    "trickle_rate": "trickle",
    "huge_rate": "huge",
    "rate_limit_rate": "rate_limit",
    "partial_listing_rate": "partial_listing",
    "missing_ref_rate": "missing_ref",
    "late_exec_rate": "late_exec",
    "refuse_after_exec_rate": "refuse_after_exec",
}
MISLEADING_ENDPOINTS = {
    "partial_listing": ("opened_trades", "pending_trades"),
    "missing_ref": ("opened_trades", "pending_trades"),
    "late_exec": ("open_order",),
    "refuse_after_exec": ("open_order",),
}
MAX_HUGE_MB = 1024.0
MAX_LATE_EXEC_S = 30.0
MAX_RETRY_AFTER_S = 86_400.0  # a day: what a throttled client is told to wait, at most


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
    rate_limit_rate: float = 0.0
    retry_after_s: float = 1.0  # the Retry-After of a rate_limit reply, whole seconds
    partial_listing_rate: float = 0.0
    missing_ref_rate: float = 0.0
    late_exec_rate: float = 0.0
    late_exec_s: float = 20.0  # a late order is taken on this many seconds after it came
    late_exec_ack: float = 0.5  # share of late orders answered (after late_exec_s), not dropped
    refuse_after_exec_rate: float = 0.0
    one_token_per_user: bool = False  # a new session revokes the user's earlier tokens
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
            if f.name == "one_token_per_user":
                if not isinstance(value, bool):
                    raise ValueError("one_token_per_user must be true or false")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0")
            if (f.name.endswith("_rate") or f.name == "late_exec_ack") and value > 1:
                raise ValueError(f"{f.name} must be between 0 and 1")
            if f.name.endswith("_ms") and value > MAX_MS:
                raise ValueError(f"{f.name} must be at most {MAX_MS:g} (a day)")
            if f.name == "huge_mb" and value > MAX_HUGE_MB:
                raise ValueError(f"huge_mb must be at most {MAX_HUGE_MB:g}")
            if f.name == "retry_after_s" and value > MAX_RETRY_AFTER_S:
                raise ValueError(f"retry_after_s must be at most {MAX_RETRY_AFTER_S:g}")
            if f.name == "late_exec_s" and value > MAX_LATE_EXEC_S:
                raise ValueError(f"late_exec_s must be at most {MAX_LATE_EXEC_S:g}")

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
class FaultDecision:
    """What to do to one request."""

    delay_s: float = 0.0
    kind: str | None = None  # a KIND_OF_RATE value
    error_status: int = 503
    hold_s: float = 0.0
    trickle_s: float = 0.0  # trickle: seconds per byte
    huge_bytes: int = 0  # huge: the padded body's size
    retry_after_s: float = 0.0  # rate_limit: the Retry-After header's seconds
    late_s: float = 0.0  # late_exec: how late the order is taken on
    late_ack: bool = False  # late_exec: the reply comes (late) rather than being dropped
    sub_seed: int = 0  # the misleading kinds' own choices (which trades) are drawn from it


class FaultInjector:
    """Draws a :class:`FaultDecision` per request from a seeded generator."""

    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self._settings = settings
        self._rng = random.Random(seed)
        self._mislead_rng = random.Random(f"mislead-{seed}")  # leaves _rng's sequence alone
        self._lock = threading.Lock()

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, changes: dict[str, object]) -> FaultSettings:
        with self._lock:
            self._settings = self._settings.updated(changes)
            return self._settings

    def decide(self, has_token: bool, endpoint: str = "") -> FaultDecision:
        with self._lock:
            s = self._settings
            draw = self._rng.random()
            jitter = self._rng.random() * s.jitter_ms
            status = self._rng.choice((500, 502, 503, 504))
            kind = _pick(s, draw, has_token)
            late_ack, sub_seed = False, 0
            if kind in MISLEADING_ENDPOINTS:
                if endpoint not in MISLEADING_ENDPOINTS[kind]:
                    kind = None
                else:
                    late_ack = self._mislead_rng.random() < s.late_exec_ack
                    sub_seed = self._mislead_rng.getrandbits(32)
        delay = (s.latency_ms + jitter) / 1000.0
        return FaultDecision(
            delay_s=delay,
            kind=kind,
            error_status=status,
            hold_s=s.slow_success_ms / 1000.0,
            trickle_s=s.trickle_ms / 1000.0,
            huge_bytes=int(s.huge_mb * 1024 * 1024),
            retry_after_s=s.retry_after_s,
            late_s=s.late_exec_s,
            late_ack=late_ack,
            sub_seed=sub_seed,
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
