"""Who may see the page and act through it: every access rule of the dashboard, once.

- **Host** (against DNS rebinding): the ``Host`` header must name the port we listen on
  and a host that cannot be a stranger's name: an IP literal, ``localhost``, or the
  host of ``web.listen``. A page of ``evil.example`` whose name was re-pointed at
  127.0.0.1 sends ``Host: evil.example`` and is refused before anything is read.
- **Token**: with ``web.token`` (required off loopback) every request but the login form
  needs the session cookie (HttpOnly, SameSite=Strict), given once for the right token,
  or ``Authorization: Bearer TOKEN`` (scripts). The cookie holds a value derived from
  the token and a per-process random key, never the token itself.
- **Actions**: POST only, with an ``Origin`` equal to the page's own and the per-process
  CSRF token in ``X-CSRF-Token``; refused in read-only mode. A GET never acts.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from http.cookies import CookieError, SimpleCookie

from multirun.core.redact import Secret

COOKIE = "multirun_session"
CSRF_HEADER = "X-CSRF-Token"


class Guard:
    """The access rules for one server (its port known once bound)."""

    def __init__(self, host: str, port: int, *, token: Secret | None, read_only: bool) -> None:
        self.host = host.lower()
        self.port = port
        self.token = token
        self.read_only = read_only
        self.csrf = secrets.token_urlsafe(32)
        key = secrets.token_bytes(32)
        self._session = (
            hmac.new(key, token.reveal().encode(), hashlib.sha256).hexdigest() if token else ""
        )

    # --- Host and Origin ---------------------------------------------------------------

    def host_ok(self, header: str | None) -> bool:
        """Whether ``Host`` names us (see the module docstring)."""
        if not header:
            return False
        name, port = _split_host(header.strip().lower())
        if port != self.port:
            return False
        return name in ("localhost", self.host) or _is_ip(name)

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Whether a POST comes from our own page (its ``Origin`` is our scheme and host)."""
        if not origin or not host:
            return False
        return origin.lower() == f"http://{host.lower()}"

    # --- the token ---------------------------------------------------------------------

    @property
    def needs_login(self) -> bool:
        return self.token is not None

    def authed(self, cookie_header: str | None, authorization: str | None) -> bool:
        """Whether the request carries the session cookie or the bearer token."""
        if self.token is None:
            return True
        if authorization and authorization.startswith("Bearer "):
            offered = authorization.removeprefix("Bearer ").strip()
            return hmac.compare_digest(offered.encode(), self.token.reveal().encode())
        value = _cookie(cookie_header, COOKIE)
        return value is not None and hmac.compare_digest(value.encode(), self._session.encode())

    def login(self, offered: str) -> str | None:
        """The ``Set-Cookie`` value for the right token, else None."""
        if self.token is None or not hmac.compare_digest(
            offered.encode(), self.token.reveal().encode()
        ):
            return None
        return f"{COOKIE}={self._session}; HttpOnly; SameSite=Strict; Path=/"

    # --- actions -------------------------------------------------------------------------

    def csrf_ok(self, header: str | None) -> bool:
        return bool(header) and hmac.compare_digest((header or "").encode(), self.csrf.encode())


def _split_host(header: str) -> tuple[str, int | None]:
    """``name:port`` or ``[v6]:port`` as its name and port (None: no or a bad port)."""
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ""
    else:
        name, _, port_text = header.rpartition(":") if ":" in header else (header, "", "")
    return name, int(port_text) if port_text.isdigit() else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return None if morsel is None else morsel.value
