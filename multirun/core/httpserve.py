"""A threaded standard-library HTTP server that sleeps until a connection or its stop.

``ThreadingHTTPServer.serve_forever`` wakes every ``poll_interval`` to look for a
shutdown: 2 times a second by default, 20 where a stop must be prompt, for as long as it
serves (most of what an idle dashboard cost). :class:`QuietHTTPServer` waits on its
listening socket and on a pipe that :meth:`~QuietHTTPServer.shutdown` writes to, so it
sleeps until a client connects or it is stopped. It keeps the connections it serves (a
kept-alive one is a thread waiting for its next request) and cuts them at
:meth:`~QuietHTTPServer.close_connections`: a stopped server does not go on serving.

The simulator, the dashboard and ``/metrics`` serve through it. It imports the standard
library only.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHTTPServer(ThreadingHTTPServer):
    """A thread per connection; :meth:`serve_forever` until :meth:`shutdown`, with no
    polling. The address family follows the host (an IPv6 literal: AF_INET6) unless
    ``family`` says."""

    daemon_threads = True  # a request in progress does not hold up the process's exit
    block_on_close = False  # nor a kept-alive connection a stop

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        family: socket.AddressFamily | None = None,
    ) -> None:
        if family is not None:
            self.address_family = family
        elif ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._stopping = False
        self._served = threading.Event()
        self._served.set()  # not serving yet: shutdown() has nothing to wait for
        try:
            super().__init__(address, handler)
        except BaseException:
            self._close_pipe()
            raise
        # a client gone between select() and accept(): accept fails at once, never waits
        self.socket.setblocking(False)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` (``poll_interval`` is not used: nothing polls)."""
        with self._state_lock:
            if self._stopping:
                return
            self._served.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _events in selector.select():
                        if key.fileobj is self and not self._stopping:
                            self.handle_request()  # readable: accepts one, never waits
                    self.service_actions()
        finally:
            self._served.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        with self._state_lock:
            first, self._stopping = not self._stopping, True
        if first:  # once: after server_close the pipe's numbers may be another file's
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"x")
        self._served.wait()

    def close_connections(self) -> None:
        """Cut every connection being served (each one's thread then ends)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # closed by its client meanwhile
                connection.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_read = self._wake_write = -1
