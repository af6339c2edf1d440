"""Session tokens: issuing, checking, revoking, and the one-token-per-user policy."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from multirun.sim import params as p
from multirun.sim.accounts import Directory
from multirun.sim.clock import SimClock, fmt_ts
from multirun.sim.params import ApiFail, Params


@dataclass
class _Session:
    user: str
    expires: float
    revoked: bool = False


class Sessions:
    """Every token issued; ``one_token_per_user`` makes a new one revoke the user's others."""

    def __init__(self, directory: Directory, clock: SimClock, token_ttl_s: float) -> None:
        self.directory = directory
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.one_token_per_user = False
        self.tokens_issued = 0
        self.tokens_replaced = 0  # earlier tokens revoked by a new session (one_token_per_user)
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def issue(self, params: Params) -> dict[str, object]:
        """The ``/session`` reply: a new token for a known user and key."""
        user, key = p.text(params, "user"), p.text(params, "api_key")
        if not self.directory.key_ok(user, key):
            raise ApiFail(401, "invalid user or api_key")
        now = self.clock.now()
        token = secrets.token_hex(16)
        with self._lock:
            if self.one_token_per_user:
                for earlier in self._sessions.values():
                    if earlier.user == user and not earlier.revoked:
                        earlier.revoked = True
                        self.tokens_replaced += 1
            self._sessions[token] = _Session(user, now + self.token_ttl_s)
            self.tokens_issued += 1
        return {"res": {"token": token, "expired_utc": fmt_ts(now + self.token_ttl_s)}}

    def revoke(self, token: str) -> None:
        with self._lock:
            if token in self._sessions:
                self._sessions[token].revoked = True

    def revoke_all(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.revoked = True

    def user(self, params: Params, *, token_optional: bool = False) -> str:
        """The authenticated user of an account call (401 on any doubt).

        ``token_optional``: the reporting calls (``/strategy_*``), which ALGOGENE's own
        client sends with ``user`` and ``api_key`` alone; a token sent anyway is checked.
        """
        user, key = p.text(params, "user"), p.text(params, "api_key")
        token = p.text(params, "token")
        if not user or not key:
            raise ApiFail(401, "missing user or api_key")
        if not self.directory.key_ok(user, key):
            raise ApiFail(401, "invalid user or api_key")
        if not token and token_optional:
            return user
        if not token:
            raise ApiFail(401, "missing token")
        with self._lock:
            session = self._sessions.get(token)
        if session is None or session.user != user:
            raise ApiFail(401, "invalid token")
        if session.revoked:
            raise ApiFail(401, "token revoked")
        if self.clock.now() >= session.expires:
            raise ApiFail(401, "token expired")
        return user
