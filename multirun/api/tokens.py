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

**Shared by one user's processes.** A server may keep one live token per user, so
that each renewal revokes the token of every other account of that user. With a
:class:`SharedTokenFile` (``state_dir/.tokens/<hash>.json``, 0600, see
:mod:`multirun.core.statedir`), the processes of one user coordinate: a renewal happens
under an exclusive ``flock`` and first re-reads the file (another process may have
just renewed); a token written there by another process is adopted as soon as the
file changes, before the next request. Each process still keeps its own lifecycle:
when the server allows several tokens nothing changes but fewer ``/session`` calls.

The token value never leaves this module except through :meth:`TokenManager.get`
(for the request itself) and the shared file (0600); nothing here logs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from multirun.api.models import Token, parse_api_time
from multirun.core.clock import SYSTEM_CLOCK, Clock
from multirun.core.locks import HeldLock

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


@dataclass(frozen=True)
class SharedToken:
    """A token as the shared file holds it: its value, its expiry by the server's word,
    and the local wall time until which its writer judged it usable."""

    token: Token
    usable_until: float  # local wall time (one machine: one wall clock)
    lifetime_s: float


class SharedTokenFile:
    """One (server, user)'s current session token, shared by the processes on this host.

    Written atomically (a temporary file renamed over it), 0600 in a 0700 directory;
    renewals are serialised by an exclusive ``flock`` on ``<name>.lock``. Unreadable or
    malformed content counts as no token (the next renewal rewrites it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")
        self._seen: tuple[int, int] | None = None  # (mtime_ns, inode) last read

    def changed(self) -> bool:
        """Whether the file differs from the last :meth:`read` (cheap: one stat)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_ino) != self._seen

    def read(self) -> SharedToken | None:
        try:
            st = os.stat(self.path)
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._seen = (st.st_mtime_ns, st.st_ino)
            token = Token(str(data["token"]), parse_api_time(str(data["expires_utc"])))
            return SharedToken(token, float(data["usable_until"]), float(data["lifetime_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, shared: SharedToken) -> None:
        """Best-effort: a state directory that cannot take it only costs sharing."""
        data = {
            "token": shared.token.value,
            "expires_utc": shared.token.expires_utc.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "usable_until": shared.usable_until,
            "lifetime_s": shared.lifetime_s,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(tmp, self.path)
            st = os.stat(self.path)
            self._seen = (st.st_mtime_ns, st.st_ino)
        except OSError as exc:
            log.warning("cannot write the shared session token file (%s): not sharing it",
                        exc.strerror or type(exc).__name__)  # fmt: skip
            with contextlib.suppress(OSError):
                tmp.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the renewal lock (blocking); without a usable directory, no lock."""
        with contextlib.ExitStack() as held:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                held.enter_context(HeldLock.waiting(self.lock_path))
            except OSError:
                pass  # renewing unlocked costs at most a second token: never a failure
            yield


class TokenManager:
    """Holds one account's session token and decides when to fetch a new one.

    ``fetch`` performs the ``/session`` call (with its own retries) and returns a
    :class:`SessionReply`; whatever it raises propagates out of :meth:`get`. ``shared``:
    the token file of this user's processes (see the module docstring), or None.
    """

    def __init__(
        self,
        fetch: Callable[[], SessionReply],
        *,
        margin_s: float = 60.0,
        clock: Clock | None = None,
        skew_tolerance_s: float = 2.0,
        shared: SharedTokenFile | None = None,
    ) -> None:
        self._fetch = fetch
        self._margin_s = margin_s
        self._clock = clock or SYSTEM_CLOCK
        self._skew_tolerance_s = skew_tolerance_s
        self._held: _Held | None = None
        self._offset: tuple[float, float] | None = None  # server - local, seconds
        self._warned: set[str] = set()  # warnings already logged once
        self._lock = threading.Lock()
        self._shared = shared
        self._refused: list[str] = []  # tokens the server refused (never adopted again)
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
            if self._shared is not None and self._shared.changed():
                self._adopt(self._shared.read())
            held = self._held
            if held is None or self._clock.monotonic() >= held.renew_at:
                held = self._renew_shared() if self._shared is not None else self._renew_locked()
            return held.token.value

    def share(self, shared: SharedTokenFile) -> None:
        """From now on, coordinate with the processes sharing ``shared``."""
        with self._lock:
            self._shared = shared

    def invalidate(self, value: str) -> None:
        """Forget the token ``value`` (the server refused it), so the next :meth:`get`
        fetches a new one. A token already replaced by a newer one is left alone, so that
        several calls failing with the same stale token cause one renewal, not several."""
        with self._lock:
            self._refused = [*self._refused[-7:], value]
            if self._held is not None and self._held.token.value == value:
                self._held = None

    def _adopt(self, shared: SharedToken | None) -> _Held | None:
        """Take the shared file's token when it is another, not refused, still usable one."""
        if shared is None or shared.token.value in self._refused:
            return None
        if self._held is not None and self._held.token.value == shared.token.value:
            return self._held
        left = shared.usable_until - self._clock.time()
        margin = max(0.0, min(self._margin_s, shared.lifetime_s / 20.0))
        if left <= margin:
            return None
        self._held = _Held(shared.token, self._clock.monotonic() + left - margin, left)
        log.debug("session token taken from the shared token file")
        return self._held

    def _renew_shared(self) -> _Held:
        """Renew under the user's lock: another process may have just done it."""
        assert self._shared is not None
        with self._shared.locked():
            adopted = self._adopt(self._shared.read())
            if adopted is not None and self._clock.monotonic() < adopted.renew_at:
                return adopted
            held = self._renew_locked()
            usable_until = self._clock.time() + (held.renew_at - self._clock.monotonic())
            self._shared.write(SharedToken(held.token, usable_until + self._margin_of(held),
                                           held.lifetime_s))  # fmt: skip
            return held

    def _margin_of(self, held: _Held) -> float:
        return max(0.0, min(self._margin_s, held.lifetime_s / 20.0))

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
