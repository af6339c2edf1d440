"""The transport's HTTP session: requests' Session, and a direct path through its pool.

:class:`HttpSession` sends one request and returns urllib3's response, headers read and
body not yet (:mod:`multirun.api.transport` reads it within its deadline and size cap).

- **requests is the client's library**: one :class:`requests.Session` per client, its
  adapter over urllib3 pools whose connections the deadline watchdog can cut
  (:mod:`multirun.api.request_deadline`), no urllib3 retries, the environment's proxy and CA
  settings read once (:func:`http_session`).
- **The hot path** goes straight to the urllib3 pool that requests' own adapter holds for
  our host (the same pool, connections, TLS settings and connection class): requests'
  per-call preparation (merging settings, hooks, cookies, re-parsing the URL) cost about
  as much CPU as the exchange itself. It sends what requests would send (request line,
  default headers, query string, JSON body) and raises the exceptions requests' adapter
  would (:func:`as_requests_error`), so the transport cannot tell the two apart.
- **The wire**: when no proxy applies, the hot path's request goes out through the
  standard library's http.client (:mod:`multirun.api.wire`, half the CPU of urllib3's
  pool), with requests' CA setting and every behaviour of the pool path; else (``wire``
  off, a client certificate, an Accept-Encoding the wire cannot decode) through the pool.
- **Through requests' Session** when a proxy applies (requests' proxy handling), when
  requests' adapter has been replaced (the ``responses`` mock of the unit tests), on
  requests older than 2.32.2, or with :attr:`HttpSession.direct` off.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from multirun.api.request_deadline import POOL_CLASSES
from multirun.api.wire import DECODABLE, Wire

# A JSON object: what we send (query parameters or JSON body).
Json = dict[str, Any]

_ADAPTERS = HTTPAdapter.send.__module__  # "requests.adapters", unless a mock replaced it


class HttpSession:
    """One server's requests Session, with the direct path to its pool."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        # requests' Session, built when a request goes through it or its pool (a proxy, a
        # replaced adapter, the wire off): on the wire, building it, its adapter and its
        # pool copied ~1 MiB of the supervisor's pages into each worker (issue 27)
        self._session: requests.Session | None = None
        self._env_proxies, self._env_verify = environment_settings(self._base)
        self.direct = True  # the hot path through requests' own pool (tests turn it off)
        self.wire = True  # ... and through http.client rather than the pool (likewise)
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._wire: Wire | None = None
        parts = urllib.parse.urlsplit(self._base)
        self._parts = parts
        self._path = parts.path
        # requests' default headers, as it sends them
        self._headers = {k: str(v) for k, v in requests.utils.default_headers().items()}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}

    @property
    def session(self) -> requests.Session:
        """requests' Session for our server (:func:`http_session`), built on first use."""
        if self._session is None:
            self._session = http_session(self._base)
        return self._session

    def _proxies(self) -> Mapping[str, str]:
        return self._session.proxies if self._session is not None else self._env_proxies

    def close(self) -> None:
        """Close the session (its pooled connections). Idempotent."""
        self._pool = None
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._session is not None:
            self._session.close()

    def open(self, method: str, endpoint: str, payload: Json, timeout: tuple[float, float]) -> Any:
        """Send one request (GET: ``payload`` in the query string; else a JSON body) with
        ``(connect, read)`` timeouts, no redirect followed; urllib3's response, streamed."""
        wire = self.wire_path()
        pool = None if wire is not None else self.pool()
        if wire is None and pool is None:
            url = f"{self._base}/{endpoint}"
            if method == "GET":
                response = self.session.get(
                    url, params=payload, timeout=timeout, allow_redirects=False, stream=True
                )
            else:
                response = self.session.post(
                    url, json=payload, timeout=timeout, allow_redirects=False, stream=True
                )
            return response.raw
        target = f"{self._path}/{endpoint}"  # what requests sends: no scheme, no host
        headers, body = self._headers, None
        if method == "GET":
            query = query_string(payload)
            target = f"{target}?{query}" if query else target
        else:
            body = json.dumps(payload, allow_nan=False).encode("utf-8")
            headers = self._json_headers
        if wire is not None:
            return wire.request(method, target, body, headers, timeout)
        assert pool is not None
        try:
            return pool.urlopen(
                method, target, body=body, headers=headers, retries=False, redirect=False,
                assert_same_host=False, preload_content=False, decode_content=False,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            )  # fmt: skip
        except urllib3.exceptions.HTTPError as exc:
            raise as_requests_error(exc) from None  # its text holds the URL: never chained

    def wire_path(self) -> Wire | None:
        """The http.client wire to our host, or None: the pool or the Session (the wire
        applies where the pool would: no proxy, requests' own adapter)."""
        if not self.wire or not self._direct_applies():
            return None
        cert = self._session.cert if self._session is not None else None
        if cert or self._parts.scheme not in ("http", "https"):
            return None
        accepted = {e.strip().lower() for e in self._headers.get("Accept-Encoding", "").split(",")}
        if not accepted <= DECODABLE | {"", "identity"}:
            return None  # e.g. br or zstd, when their packages are installed
        if self._wire is None:
            verify = self._session.verify if self._session is not None else self._env_verify
            parts = self._parts
            self._wire = Wire(parts.scheme, parts.hostname or "", parts.port,
                              verify if isinstance(verify, bool | str) else True)  # fmt: skip
        return self._wire

    def pool(self) -> urllib3.HTTPConnectionPool | None:
        """The pool of requests' adapter for our host, or None: go through requests."""
        if not self._direct_applies():
            return None
        if self._pool is None:
            adapter = self.session.get_adapter(self._base)
            connection_for = getattr(adapter, "get_connection_with_tls_context", None)
            if connection_for is None:  # a replaced adapter
                return None
            probe = requests.Request("GET", self._base).prepare()
            self._pool = connection_for(probe, self.session.verify, {}, None)
        return self._pool

    def _direct_applies(self) -> bool:
        """No proxy for our host, requests' own adapter (>= 2.32.2), direct not turned off."""
        if not self.direct or self._proxies():
            return False
        if getattr(HTTPAdapter.send, "__module__", "") != _ADAPTERS:
            return False
        return hasattr(HTTPAdapter, "get_connection_with_tls_context")  # requests < 2.32.2


def environment_settings(base_url: str) -> tuple[dict[str, str], bool | str]:
    """The proxies and CA setting :func:`http_session` reads from the environment for
    ``base_url``, by requests' rules (``Session.merge_environment_settings``), without
    building a Session."""
    proxies = requests.utils.get_environ_proxies(base_url)
    verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return proxies, verify


def query_string(payload: Json) -> str:
    """``payload`` as requests encodes ``params=``: None values left out, a list or
    tuple value repeated, everything else as ``str``, form-encoded (UTF-8)."""
    pairs: list[tuple[str, Any]] = []
    for key, value in payload.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is not None:
                pairs.append((key, item))
    return urllib.parse.urlencode(pairs)


def as_requests_error(exc: urllib3.exceptions.HTTPError) -> Exception:
    """The exception requests' adapter raises for urllib3's ``exc`` (see
    ``HTTPAdapter.send``), so that both paths fail alike."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return requests.ConnectionError(exc)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return requests.ConnectTimeout(exc)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.ReadTimeout(exc)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, urllib3.exceptions.ProxyError):
        return requests.exceptions.ProxyError(exc)
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return requests.ConnectionError(exc)
    return exc


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, over urllib3 pools whose connections the deadline watchdog can
    cut (:mod:`multirun.api.request_deadline`). A SOCKS proxy keeps its own pools (not watched: the
    body's chunked reading still bounds a trickle between chunks)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = POOL_CLASSES
        return manager


def http_session(base_url: str) -> requests.Session:
    """One pooled session, no urllib3 retries, the environment's proxy and CA settings.

    requests re-reads proxies and CA bundles from the environment on every request (a
    scan of ``os.environ``, about a fifth of a request's CPU); every request of ours goes
    to ``base_url``'s host, so they are read once, here, by requests' own rules.
    """
    session = requests.Session()
    adapter = _WatchedAdapter(max_retries=0, pool_connections=1, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False
    return session
