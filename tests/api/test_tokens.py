"""Unit tests of :class:`multirun.api.tokens.TokenManager` with a fake clock and fetch."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from multirun.api.models import Token
from multirun.api.tokens import SessionReply, TokenManager
from tests.conftest import FakeClock

T0 = datetime(2026, 11, 24, 8, 0, 0, 250000, tzinfo=UTC)


class Clock(FakeClock):
    def __init__(self) -> None:
        super().__init__(T0, mono=50.0)


class Server:
    """Issues tokens ``ttl_s`` long by its own clock, ``skew_s`` ahead of ours."""

    def __init__(self, clock: Clock, ttl_s: float = 100.0, skew_s: float = 0.0) -> None:
        self.clock, self.ttl_s, self.skew_s = clock, ttl_s, skew_s
        self.issued = 0
        self.date = True
        self.latency_s = 0.0

    def fetch(self) -> SessionReply:
        self.issued += 1
        now = datetime.fromtimestamp(self.clock.wall + self.skew_s, UTC)
        self.clock.advance(self.latency_s)
        expires = (now + timedelta(seconds=self.ttl_s)).replace(tzinfo=None)
        header = now.replace(microsecond=0) if self.date else None
        return SessionReply(Token(f"tok-{self.issued}", expires), header)


def manager(server: Server, margin_s: float = 60.0) -> TokenManager:
    return TokenManager(server.fetch, margin_s=margin_s, clock=server.clock)


def test_fetch_on_first_use_then_reuse() -> None:
    clock = Clock()
    server = Server(clock)
    tokens = manager(server)
    assert tokens.expires_utc is None and tokens.current is None and server.issued == 0
    assert tokens.get() == "tok-1"
    assert tokens.get() == "tok-1"
    assert server.issued == 1 and tokens.fetches == 1
    assert tokens.expires_utc == (T0 + timedelta(seconds=100)).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("ttl_s", "margin_s", "renew_after"),
    [(3600.0, 60.0, 3540.0), (100.0, 60.0, 95.0), (5.0, 60.0, 4.75), (100.0, 1.0, 99.0)],
)
def test_margin_is_the_smaller_of_the_setting_and_a_twentieth(ttl_s, margin_s, renew_after):
    clock = Clock()
    server = Server(clock, ttl_s=ttl_s)
    tokens = manager(server, margin_s)
    tokens.get()
    clock.advance(renew_after - 0.01)
    assert tokens.get() == "tok-1"
    clock.advance(0.02)
    assert tokens.get() == "tok-2"


def test_invalidate_drops_only_the_refused_token() -> None:
    clock = Clock()
    tokens = manager(Server(clock))
    first = tokens.get()
    tokens.invalidate(first)
    second = tokens.get()
    assert second != first
    tokens.invalidate(first)  # a late refusal of the old token: keep the new one
    assert tokens.get() == second


@pytest.mark.parametrize("skew_s", [-7200.0, -5.0, 5.0, 7200.0])
def test_skewed_local_clock_uses_the_servers(skew_s, caplog) -> None:
    clock = Clock()
    server = Server(clock, ttl_s=100.0, skew_s=skew_s)
    tokens = manager(server, margin_s=2.0)
    with caplog.at_level(logging.WARNING, logger="multirun.tokens"):
        tokens.get()
    assert "local clock is about" in caplog.text
    clock.advance(96.0)  # < 100 - 2 (margin) - 1 (Date resolution)
    assert tokens.get() == "tok-1"
    clock.advance(2.0)  # 98 s: inside margin + resolution
    assert tokens.get() == "tok-2"


def test_successive_dates_narrow_the_skew_estimate() -> None:
    clock = Clock()
    server = Server(clock, ttl_s=10.0, skew_s=30.6)
    tokens = manager(server, margin_s=0.0)
    lifetimes = []
    for _ in range(8):
        tokens.get()
        lifetimes.append(tokens._held.lifetime_s)
        clock.advance(0.37)
        tokens.invalidate(tokens.current or "")
    assert lifetimes[0] == pytest.approx(9.85, abs=0.01)  # offset known within (29.75, 30.75)
    assert lifetimes[-1] > 9.8  # the true offset, 30.6, is pinned down to ~0.2 s
    assert all(life <= 10.0 for life in lifetimes)  # never more than the truth


@pytest.mark.parametrize("date_off_s", [-86400.0 * 365 * 2000, -3 * 86400.0, 200.0, 1e9])
def test_a_date_header_inconsistent_with_the_expiry_is_ignored(date_off_s) -> None:
    """Date and expired_utc both come from the server's clock, so expiry - Date is the
    token's lifetime by the server's word. When that is not plausible (negative, or over a
    day) the Date came from elsewhere (a proxy, garbage): the local clock counts instead,
    and the estimate of the offset is left untouched."""
    clock = Clock()
    server = Server(clock, ttl_s=100.0)
    real = server.fetch

    def fetch() -> SessionReply:
        reply = real()
        date = reply.server_date + timedelta(seconds=date_off_s)
        return SessionReply(reply.token, date)

    tokens = TokenManager(fetch, margin_s=1.0, clock=clock)
    tokens.get()
    clock.advance(98.9)
    assert tokens.get() == "tok-1"
    clock.advance(0.2)
    assert tokens.get() == "tok-2"
    assert tokens._offset is None


def test_without_date_header_the_local_clock_counts() -> None:
    clock = Clock()
    server = Server(clock, ttl_s=100.0, skew_s=0.0)
    server.date = False
    tokens = manager(server, margin_s=1.0)
    tokens.get()
    clock.advance(98.9)
    assert tokens.get() == "tok-1"
    clock.advance(0.2)
    assert tokens.get() == "tok-2"


def test_an_already_expired_token_is_used_once_then_renewed(caplog) -> None:
    clock = Clock()
    server = Server(clock, ttl_s=-1.0)
    tokens = manager(server)
    with caplog.at_level(logging.WARNING, logger="multirun.tokens"):
        assert tokens.get() == "tok-1"
    assert "already expired" in caplog.text
    assert tokens.get() == "tok-2"


def test_fetch_errors_propagate_and_nothing_is_held() -> None:
    def fetch() -> SessionReply:
        raise RuntimeError("down")

    tokens = TokenManager(fetch)
    with pytest.raises(RuntimeError):
        tokens.get()
    assert tokens.current is None


def test_concurrent_callers_share_one_fetch() -> None:
    calls = []

    def fetch() -> SessionReply:
        calls.append(1)
        time.sleep(0.05)
        return SessionReply(Token("t", datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)))

    tokens = TokenManager(fetch)
    threads = [threading.Thread(target=tokens.get) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1


def test_repr_of_token_hides_the_value() -> None:
    token = Token("very-secret-token", datetime(2026, 1, 1))
    assert "very-secret-token" not in repr(token)
