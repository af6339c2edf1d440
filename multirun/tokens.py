"""One account's session token: fetched on first use, renewed ahead of expiry.

The server says when a token expires (``expired_utc``) in *its* clock. This
machine's clock may disagree, so :class:`TokenManager` never compares the
server's expiry with the local wall clock directly. It turns the expiry into a
remaining lifetime measured against the server's own "now" at the moment the
token was issued, then counts that lifetime down on the local *monotonic*
clock:

- the server's "now" comes from the HTTP ``Date`` header of the ``/session``
  replies (1 s resolution): each one bounds the offset between the two clocks, and
  successive ones narrow those bounds. When the local wall clock agrees with them
  (within ``skew_tolerance_s``) the local clock is used (sub-second, and right
  whenever NTP is working); when it disagrees, the latest server time the bounds
  allow is used (conservative: the token is taken to expire no later than it does);
- without a ``Date`` header, or with one that contradicts ``expired_utc`` (not
  from the server's clock), the local wall clock is all there is.

The token is renewed ``margin`` seconds before that local deadline, where
``margin = min(token_margin_s, lifetime / 20)``: a one-hour token is renewed a
minute early, a 5 s token a quarter of a second early (a 60 s margin on a 5 s token
would mean a new token for every call).

The token value never leaves this module except through :meth:`TokenManager.get`
(for the request itself); nothing here logs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from multirun.clock import SYSTEM_CLOCK, Clock
from multirun.models import Token

log = logging.getLogger(__name__)

# A token lifetime (expired_utc - Date) beyond this means the Date header is not the
# server's: ALGOGENE's tokens last an hour.
MAX_PLAUSIBLE_LIFETIME_S = 86400.0


@dataclass(frozen=True)
class SessionReply:
    """What ``/session`` answered: the token and the reply's ``Date`` header, if any."""

    token: Token
    server_date: datetime | None = None  # aware UTC, 1 s resolution


@dataclass(frozen=True)
class _Held:
    token: Token
    renew_at: float  # local monotonic
    lifetime_s: float


def _utc_seconds(moment: datetime) -> float:
    """Unix seconds of ``moment``; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class TokenManager:
    """Holds one account's session token and decides when to fetch a new one.

    ``fetch`` performs the ``/session`` call (with its own retries) and returns a
    :class:`SessionReply`; whatever it raises propagates out of :meth:`get`.
    """

    def __init__(
        self,
        fetch: Callable[[], SessionReply],
        *,
        margin_s: float = 60.0,
        clock: Clock | None = None,
        skew_tolerance_s: float = 2.0,
    ) -> None:
        self._fetch = fetch
        self._margin_s = margin_s
        self._clock = clock or SYSTEM_CLOCK
        self._skew_tolerance_s = skew_tolerance_s
        self._held: _Held | None = None
        self._offset: tuple[float, float] | None = None  # server - local, seconds
        self._warned: set[str] = set()  # warnings already logged once
        self._lock = threading.Lock()
        self.fetches = 0

    @property
    def expires_utc(self) -> datetime | None:
        """When the server says the current token expires (naive UTC), or None before the first."""
        held = self._held
        return held.token.expires_utc if held else None

    @property
    def current(self) -> str | None:
        """The token value held now, without fetching (None before the first fetch)."""
        held = self._held
        return held.token.value if held else None

    def get(self) -> str:
        """A token that should be valid for the next call: fetches on first use and renews
        once the renewal point has passed. Raises whatever ``fetch`` raises."""
        with self._lock:
            held = self._held
            if held is None or self._clock.monotonic() >= held.renew_at:
                held = self._renew_locked()
            return held.token.value

    def invalidate(self, value: str) -> None:
        """Forget the token ``value`` (the server refused it), so the next :meth:`get`
        fetches a new one. A token already replaced by a newer one is left alone, so that
        several calls failing with the same stale token cause one renewal, not several."""
        with self._lock:
            if self._held is not None and self._held.token.value == value:
                self._held = None

    def _renew_locked(self) -> _Held:
        wall_sent = self._clock.time()
        reply = self._fetch()
        received = self._clock.monotonic()
        wall = self._clock.time()
        lifetime = self._lifetime(reply, wall_sent, wall)
        if lifetime <= 0:
            log.warning("session token arrived already expired by our estimate; using it once")
        margin = max(0.0, min(self._margin_s, lifetime / 20.0))
        held = _Held(reply.token, received + lifetime - margin, lifetime)
        self._held = held
        self.fetches += 1
        log.debug("session token renewed: usable %.1f s, renewed %.1f s early", lifetime, margin)
        return held

    def _lifetime(self, reply: SessionReply, wall_sent: float, wall: float) -> float:
        """Seconds the token lives from its receipt (local wall time ``wall``)."""
        expires = _utc_seconds(reply.token.expires_utc)
        date = self._plausible_date(reply, expires)
        if date is None:
            return expires - wall
        low, high = self._observe(date, wall_sent, wall)
        if low - self._skew_tolerance_s <= 0.0 <= high + self._skew_tolerance_s:
            return expires - wall  # the local clock agrees with the server's
        if "skew" not in self._warned:
            self._warned.add("skew")
            offset = (low + high) / 2
            log.warning(
                "local clock is about %.0f s %s the server's; timing session tokens by the "
                "server's clock",
                abs(offset), "behind" if offset > 0 else "ahead of",
            )  # fmt: skip
        return expires - (wall + high)  # the latest the server's clock can be

    def _plausible_date(self, reply: SessionReply, expires: float) -> float | None:
        """The reply's ``Date`` in Unix seconds, or None when absent or implausible.

        ``Date`` and ``expired_utc`` come from the same (server) clock, whatever ours says,
        so their difference is the token's lifetime: not in (0, one day], the header was
        stamped elsewhere (a proxy) or is garbage, and would make the token look already
        expired (a session call per request) or good for years (renewed only when refused).
        """
        if reply.server_date is None:
            return None
        date = _utc_seconds(reply.server_date)
        if 0.0 < expires - date <= MAX_PLAUSIBLE_LIFETIME_S:
            return date
        if "date" not in self._warned:
            self._warned.add("date")
            log.warning("the session reply's Date header disagrees with its expired_utc; "
                        "timing session tokens by the local clock")  # fmt: skip
        return None

    def _observe(self, date: float, wall_sent: float, wall_received: float) -> tuple[float, float]:
        """Narrow the interval the offset (server clock - local clock) must lie in.

        The server stamped ``Date`` (whole seconds, truncated) at some moment between
        sending and receiving, so the offset lies in (date - wall_received,
        date + 1 - wall_sent). Intersecting successive observations tightens it; an
        empty intersection means a clock jumped, and the newest observation restarts it.
        """
        low, high = date - wall_received, date + 1.0 - wall_sent
        if self._offset is not None:
            both = (max(low, self._offset[0]), min(high, self._offset[1]))
            if both[0] <= both[1]:
                low, high = both
        self._offset = (low, high)
        return low, high
