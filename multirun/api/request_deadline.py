"""A total deadline per HTTP request: a watchdog that cuts a request still in flight at its end.

requests' read timeout applies to each socket read, so a reply trickling one byte a
second never times out. Here every request runs inside :meth:`RequestWatchdog.watching`: the
connection it uses (our urllib3 connection class, :class:`WatchedHTTPConnection`, attaches
itself when it connects and when it sends) is shut down (``shutdown(SHUT_RDWR)``, which
wakes a thread blocked reading it) once the deadline passes. That cuts the connect (a
connect still under way is cut the moment it completes: the connect timeout bounds it
before that), the request, the status line and headers, and the body alike. The body is
read in chunks by :func:`read_body`, which also checks the deadline between chunks and caps
the decompressed size (urllib3 >= 2.6 decompresses each chunk with a bounded output, so
memory stays bounded against a gzip bomb).

One watchdog thread per process serves every request of every client; it sleeps until the
earliest deadline in flight. After a fork the child gets a fresh one.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CHUNK = 64 * 1024


class ReplyTooLarge(Exception):
    """Internal: the reply body passed the size cap."""


class RequestDeadlinePassed(Exception):
    """Internal: the request's total deadline passed while its body was being read."""


class Watch:
    """One request in flight: its deadline (time.monotonic) and the connection it uses."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.conn: Any = None
        self.expired = False

    def check(self) -> None:
        """Raise RequestDeadlinePassed if the deadline has passed."""
        if self.expired or time.monotonic() >= self.deadline:
            self.expired = True
            raise RequestDeadlinePassed()


_LOCAL = threading.local()  # .watch: the Watch of the request this thread is making


class RequestWatchdog:
    """Cuts the connection of every watched request whose deadline has passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None  # when the thread wakes next (None: when told)
        self._closed = False

    @contextlib.contextmanager
    def watching(self, seconds: float) -> Iterator[Watch]:
        """Watch the request made (by this thread) inside the block for ``seconds``."""
        watch = Watch(seconds)
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="multirun-request-deadline", daemon=True
                )
                self._thread.start()
            # Woken only when this deadline comes first: the thread, waking at an earlier
            # one, finds this watch then. A wake-up per request cost a thread switch.
            if self._wake_at is None or watch.deadline < self._wake_at:
                self._cond.notify()
        previous = getattr(_LOCAL, "watch", None)
        _LOCAL.watch = watch
        try:
            yield watch
        finally:
            _LOCAL.watch = previous
            with self._cond:
                self._watches.discard(watch)
                conn = watch.conn
                if conn is not None and getattr(conn, "_multirun_watch", None) is watch:
                    conn._multirun_watch = None  # back in the pool: nobody's to cut

    def attach(self, conn: http.client.HTTPConnection) -> None:
        """Called by a connection as it connects or sends: it belongs to this thread's
        watched request now (if any); cut at once if that one's deadline already passed."""
        watch = getattr(_LOCAL, "watch", None)
        if watch is None:
            return
        with self._cond:
            watch.conn = conn
            conn._multirun_watch = watch  # type: ignore[attr-defined]
            if watch.expired or time.monotonic() >= watch.deadline:
                watch.expired = True
                _cut(conn)

    def close(self) -> None:
        """End the thread, if it was started (requests still watched are no longer cut)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                pending = []
                for watch in self._watches:
                    if watch.expired:
                        continue
                    if now >= watch.deadline:
                        watch.expired = True
                        conn = watch.conn
                        if conn is not None and getattr(conn, "_multirun_watch", None) is watch:
                            _cut(conn)
                    else:
                        pending.append(watch.deadline)
                self._wake_at = min(pending) if pending else None
                self._cond.wait(self._wake_at - now if self._wake_at is not None else None)


def _cut(conn: http.client.HTTPConnection) -> None:
    """Shut the connection's socket down: a read blocked on it returns at once."""
    sock = conn.sock
    if sock is None:
        return  # still connecting: attach() cuts it when the connect completes
    with contextlib.suppress(OSError):
        # socket.socket's own shutdown, not SSLSocket's (which drops its TLS state under
        # a reader): the reader sees the end of the stream and fails.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG = RequestWatchdog()


def watchdog() -> RequestWatchdog:
    """The process's watchdog."""
    return _WATCHDOG


def renew_watchdog() -> None:
    """End this process's watchdog thread and begin a new watchdog, its thread started
    at the next watched request: for a process done with requests for a while (the
    supervisor after its warm-up) not to keep an idle thread through its forks."""
    global _WATCHDOG
    old, _WATCHDOG = _WATCHDOG, RequestWatchdog()
    old.close()


def _after_fork() -> None:
    global _WATCHDOG
    _WATCHDOG = RequestWatchdog()  # the parent's thread is not in this process


os.register_at_fork(after_in_child=_after_fork)


class _Watched:
    """Attaches a urllib3 connection to the watched request using it, at connect and send."""

    def connect(self) -> None:
        _WATCHDOG.attach(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]
        _WATCHDOG.attach(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _WATCHDOG.attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class WatchedHTTPConnection(_Watched, HTTPConnection):
    """urllib3's connection, attaching itself to the watched request using it."""


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    """The same for HTTPS."""


class WatchedWireHTTPConnection(_Watched, http.client.HTTPConnection):
    """The standard library's connection (:mod:`multirun.api.wire`), attaching itself alike."""


class WatchedWireHTTPSConnection(_Watched, http.client.HTTPSConnection):
    """The same for HTTPS."""


class WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


POOL_CLASSES = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}


def read_body(raw: Any, watch: Watch, cap: int) -> bytes:
    """The whole (decompressed) body of urllib3 response ``raw``, read in chunks.

    Raises ReplyTooLarge past ``cap`` bytes, RequestDeadlinePassed when the watch's deadline
    passes, and urllib3's or the socket's own errors when the connection fails (or was
    cut by the watchdog)."""
    length = raw.headers.get("Content-Length", "")
    if not raw.headers.get("Content-Encoding") and length.isdigit() and int(length) > cap:
        raise ReplyTooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        watch.check()
        chunk = raw.read(CHUNK, decode_content=True)
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            raise ReplyTooLarge()
        chunks.append(chunk)
    watch.check()
    return b"".join(chunks)
