"""One account's session token: fetched on first use, renewed ahead of expiry.

The server says when a token expires (``expired_utc``) in *its* clock. This
machine's clock may disagree, so :class:`TokenManager` never compares the
server's expiry with the local wall clock directly. It turns the expiry into a
remaining lifetime measured against the server's own "now" at the moment the
token was issued, then counts that lifetime down on the local *monotonic*
clock:

- the server's "now" comes from the HTTP ``Date`` header of the ``/session``
  reply (1 s resolution). When the local wall clock agrees with it (within
  ``skew_tolerance_s``), the local wall clock is used instead (sub-second, and
  right whenever NTP is working); when they disagree, the header wins, taken
  conservatively (the latest server time it can stand for, anchored at the
  moment the request was sent);
- without a ``Date`` header the local wall clock is all there is.

The token is renewed ``margin`` seconds before that local deadline, where
``margin = min(token_margin_s, lifetime / 10)``: a one-hour token is renewed a
minute early, a 5 s token half a second early (a 60 s margin on a 5 s token
would mean a new token for every call).

The token value never leaves this module except through :meth:`TokenManager.get`
(for the request itself); nothing here logs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from multirun.models import Token

log = logging.getLogger(__name__)


class Clock(Protocol):
    """The two clocks the client reads; tests inject a fake one."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for deadlines)."""
        ...

    def time(self) -> float:
        """Local wall-clock Unix time in seconds (may be skewed)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic` and :func:`time.time`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


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
        self._clock = clock or SystemClock()
        self._skew_tolerance_s = skew_tolerance_s
        self._held: _Held | None = None
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
        sent = self._clock.monotonic()
        reply = self._fetch()
        received = self._clock.monotonic()
        wall = self._clock.time()
        lifetime, anchor = self._lifetime(reply, sent, received, wall)
        margin = max(0.0, min(self._margin_s, lifetime / 10.0))
        held = _Held(reply.token, anchor + lifetime - margin, lifetime)
        self._held = held
        self.fetches += 1
        log.debug("session token renewed: usable %.1f s, renewed %.1f s early", lifetime, margin)
        return held

    def _lifetime(
        self, reply: SessionReply, sent: float, received: float, wall: float
    ) -> tuple[float, float]:
        """(seconds the token lives from ``anchor``, ``anchor`` on the monotonic clock)."""
        expires = _utc_seconds(reply.token.expires_utc)
        if reply.server_date is None:
            return expires - wall, received
        date = _utc_seconds(reply.server_date)
        # The header was stamped between ``sent`` and ``received``, at a server time in
        # [date, date + 1). A local clock inside that window (plus tolerance) agrees.
        if date - self._skew_tolerance_s <= wall <= date + 1.0 + self._skew_tolerance_s:
            return expires - wall, received
        log.warning(
            "local clock differs from the server's by about %+.0f s; timing the session "
            "token by the server's clock",
            wall - date,
        )
        return expires - (date + 1.0), sent
