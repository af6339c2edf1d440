"""The control socket's server: one JSON request per line in, one JSON reply per line out.

The running supervisor serves a Unix socket, ``state_dir/control.sock`` (0600, created
under a restrictive umask, so there is no moment it is open to others; nothing listens on
TCP). It lives in the arbiter's select loop and never blocks it:

- every descriptor is non-blocking; each connection has its own input and output buffer;
- a request is one line of JSON, at most :data:`MAX_REQUEST` bytes; a connection that
  sends no complete request within :data:`READ_DEADLINE_S` is closed;
- a peer whose uid is not ours (``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` on macOS;
  elsewhere the socket's mode alone) gets one error line and is closed;
- bad JSON, an unknown command, a wrong protocol version: one error line, never a
  traceback.

Every reply carries ``v`` (:data:`PROTOCOL`), ``ok`` and, when not ok, ``error``. A
request is handed to the arbiter's handler, which replies at once (a dict) or later
(None, then :meth:`ControlServer.reply` once the change is done).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multirun.core.errors import SupervisorError

PROTOCOL = 1
MAX_REQUEST = 64 * 1024
READ_DEADLINE_S = 10.0  # to send a whole request
WRITE_DEADLINE_S = 10.0  # for a client to read its reply
COMMANDS = (
    *("status", "stop", "start", "restart", "reload", "shutdown"),
    *("pause", "resume", "flatten"),
)

Handler = Callable[["Conn", dict[str, Any]], "dict[str, Any] | None"]


@dataclass(eq=False)
class Conn:
    """One client connection and its buffers."""

    sock: socket.socket
    opened: float  # monotonic
    inbox: bytes = b""
    outbox: bytes = b""
    waiting: bool = False  # a request is being carried out: its reply comes later
    closing: bool = False  # close once the outbox is sent
    sent_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fd(self) -> int:
        return self.sock.fileno()


def error_reply(message: str) -> dict[str, Any]:
    return {"v": PROTOCOL, "ok": False, "error": message}


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end, or None where the platform cannot tell."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is not None:
        with contextlib.suppress(OSError):
            raw = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
            return int(struct.unpack("3i", raw)[1])
    if sys.platform == "darwin":  # struct xucred {u_int version; uid_t uid; ...}
        with contextlib.suppress(OSError):
            raw = sock.getsockopt(0, getattr(socket, "LOCAL_PEERCRED", 1), 76)
            return int(struct.unpack_from("=II", raw)[1])
    return None


def bind_or_connect(sock: socket.socket, path: Path, *, bind: bool) -> None:
    """Bind or connect ``sock`` to ``path``, through its directory when the path is longer
    than a socket address holds (about 104 bytes; single-threaded callers only)."""
    act = sock.bind if bind else sock.connect
    if len(os.fsencode(str(path))) < 100:
        act(str(path))
        return
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(path.parent)
        act(path.name)
    finally:
        os.fchdir(here)
        os.close(here)


class NoAnswer(SupervisorError):
    """Nothing accepts connections on the control socket (no supervisor, or an older one)."""


def exchange(path: Path, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The client's side, for every caller (the CLI, the dashboard, the notifier): one
    request on the socket at ``path`` and its one reply, a JSON object, within
    ``timeout_s``. Raises :class:`NoAnswer` when the connection is refused, another
    :class:`SupervisorError` when no proper reply comes in time."""
    deadline = time.monotonic() + timeout_s
    with connect(path, timeout_s) as sock:
        sock.sendall(json.dumps({"v": PROTOCOL, **payload}).encode() + b"\n")
        return _read_reply(sock, deadline)


def connect(path: Path, timeout_s: float) -> socket.socket:
    """A connection to the control socket at ``path``; :class:`NoAnswer` when refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(min(timeout_s, 10.0))
    try:
        bind_or_connect(sock, path, bind=False)
    except OSError as error:
        sock.close()
        raise NoAnswer(error.strerror or str(error)) from None
    return sock


class Closed(SupervisorError):
    """The supervisor closed the connection before its reply."""


class KeptConnection:
    """:func:`exchange` for a caller that asks every second (the notifier): one connection
    kept open from request to request (the server reads request after request on one), so
    an ask costs the supervisor a read and a reply, not also an accept, a peer check and a
    close, each a turn of its loop. A connection that failed (no reply in time: a late one
    would answer the next request) is dropped and the next request opens another; a kept
    one the server closed (idle for :data:`READ_DEADLINE_S`, a supervisor gone) is opened
    again at once for the same request (every request sent here is a read: ``status``)."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.sock is not None:
            try:
                return self._exchange(self.sock, payload)
            except (Closed, BrokenPipeError, ConnectionResetError):
                self.close()  # the server closed the kept one: once more on a new one
            except BaseException:
                self.close()
                raise
        self.sock = connect(self.path, self.timeout_s)
        try:
            return self._exchange(self.sock, payload)
        except BaseException:
            self.close()
            raise

    def _exchange(self, sock: socket.socket, payload: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        sock.settimeout(min(self.timeout_s, 10.0))
        sock.sendall(json.dumps({"v": PROTOCOL, **payload}).encode() + b"\n")
        return _read_reply(sock, deadline, alone=True)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


UNCHANGED_KEYS = ("v", "ok", "generation", "unchanged")  # an "unchanged" reply's own words


class StatusReplies:
    """The supervisor's ``status`` reply, asked ``unless`` the last one kept here is still
    current: the supervisor then answers "unchanged" (its generation, bumped at each save,
    names the state a reply holds) with only what moves without a save (the reply's time,
    the file-level sums: ``Arbiter.live_status``), and the kept reply is given again with
    those replaced. For callers that ask every second or two (the notifier, the
    dashboard). ``ask`` sends one request and returns its reply (raising what it raises)."""

    def __init__(self, ask: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.ask = ask
        self.kept: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        kept, self.kept = self.kept, None
        payload: dict[str, Any] = {"cmd": "status"}
        if kept is not None:
            payload["unless"] = kept["generation"]
        reply = self.ask(payload)
        if kept is not None and reply.get("unchanged"):
            if reply.get("generation") != kept["generation"]:
                return {"ok": False, "error": "an 'unchanged' reply for another state"}
            live = {k: v for k, v in reply.items() if k not in UNCHANGED_KEYS}
            self.kept = {**kept, **live}
            return self.kept
        if reply.get("ok") and isinstance(reply.get("generation"), str):
            self.kept = reply
        return reply


def _read_reply(sock: socket.socket, deadline: float, *, alone: bool = False) -> dict[str, Any]:
    """The one reply line on ``sock``; ``alone``: nothing may follow it (the connection
    carries the next request's reply next)."""
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SupervisorError("no reply from the supervisor in time (the change may go on)")
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as error:
            raise Closed(f"the supervisor closed the connection: {error}") from None
        if not chunk:
            raise Closed("the supervisor closed the connection without a reply")
        data += chunk
        if len(data) > 64 * MAX_REQUEST:
            raise SupervisorError("the supervisor's reply is too long")
    line, rest = data.split(b"\n", 1)
    if alone and rest:
        raise SupervisorError("the supervisor's reply is followed by another")
    try:
        reply = json.loads(line)
    except ValueError:
        raise SupervisorError("the supervisor's reply is not JSON") from None
    if not isinstance(reply, dict):
        raise SupervisorError("the supervisor's reply is not a JSON object")
    return reply


class ControlServer:
    """The listening socket and its connections, driven by the arbiter's loop."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        add_reader: Callable[[int, Callable[[], bool]], None],
        remove_reader: Callable[[int], None],
        log: Callable[[str], None],
    ) -> None:
        self.path = path
        self.handler = handler
        self.add_reader = add_reader
        self.remove_reader = remove_reader
        self.log = log
        self.listener: socket.socket | None = None
        self.conns: dict[int, Conn] = {}
        self.uid = os.getuid()

    def open(self) -> None:
        """Bind and listen; the caller holds the pidfile lock, so a socket file is stale."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window where another user could connect
        try:
            bind_or_connect(listener, self.path, bind=True)
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        listener.setblocking(False)
        self.listener = listener
        self.add_reader(listener.fileno(), self._accept)

    def fds(self) -> list[int]:
        """Every descriptor of ours (a forked child closes them)."""
        listening = [self.listener.fileno()] if self.listener is not None else []
        return [*listening, *self.conns]

    def _accept(self) -> bool:
        """A new connection (or a refused one): nothing for the arbiter's loop to do."""
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return False
        sock.setblocking(False)
        conn = Conn(sock, time.monotonic())
        self.conns[conn.fd] = conn
        self.add_reader(conn.fd, lambda: self._read(conn))
        uid = peer_uid(sock)
        if uid is not None and uid != self.uid:
            self.log(f"control: refused a connection from uid {uid}")
            self.send(conn, error_reply(f"permission denied: uid {uid} is not the owner"))
            conn.closing = True
            self.flush(conn)
        return False

    def _read(self, conn: Conn) -> bool:
        """What ``conn`` sent, request by request; True when the arbiter's loop has to turn:
        a request that may change something (any but ``status``: a stop, a deferred
        reply), or a reply the socket did not take whole (:meth:`tick` sends the rest). A
        ``status`` asked every second (the notifier, the dashboard) then costs a read and a
        reply, not also a turn over every child."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return False
        if conn.closing:
            return False
        conn.inbox += data
        turn = False
        while b"\n" in conn.inbox and not conn.closing and not conn.waiting:
            line, conn.inbox = conn.inbox.split(b"\n", 1)
            turn |= self._request(conn, line) != "status"
        if len(conn.inbox) > MAX_REQUEST:
            self._refuse(conn, f"request longer than {MAX_REQUEST} bytes")
        return turn or bool(conn.outbox) or conn.waiting

    def _refuse(self, conn: Conn, message: str) -> None:
        self.send(conn, error_reply(message))
        conn.closing = True
        self.flush(conn)

    def _request(self, conn: Conn, line: bytes) -> str | None:
        """Hand one request line to the handler (or refuse it); the command handled."""
        try:
            request = json.loads(line)
        except ValueError:
            self._refuse(conn, "not a JSON request (one JSON object per line)")
            return None
        if not isinstance(request, dict):
            self._refuse(conn, "not a JSON object")
            return None
        if request.get("v") != PROTOCOL:
            self._refuse(
                conn,
                f"protocol version {request.get('v')!r} not supported (this supervisor "
                f"speaks {PROTOCOL}): use the same multirun for the client and the supervisor",
            )
            return None
        if request.get("cmd") not in COMMANDS:
            self._refuse(conn, f"unknown command {request.get('cmd')!r} ({', '.join(COMMANDS)})")
            return None
        try:
            reply = self.handler(conn, request)
        except Exception as error:  # the loop must go on whatever a request does
            self.log(f"control: {request.get('cmd')} failed: {type(error).__name__}: {error}")
            reply = error_reply(f"{request.get('cmd')} failed: {type(error).__name__}: {error}")
        if reply is None:
            conn.waiting = True
        else:
            self.send(conn, reply)
        return str(request["cmd"])

    def reply(self, conn: Conn, reply: dict[str, Any]) -> None:
        """The deferred reply of ``conn``'s request, once the change is done."""
        conn.waiting = False
        if conn.fd in self.conns or conn.sock.fileno() >= 0:
            self.send(conn, reply)

    def send(self, conn: Conn, reply: dict[str, Any]) -> None:
        reply.setdefault("v", PROTOCOL)
        conn.outbox += json.dumps(reply, sort_keys=True).encode() + b"\n"
        conn.sent_at = time.monotonic()
        self.flush(conn)

    def flush(self, conn: Conn) -> None:
        while conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except BlockingIOError:
                return
            except OSError:
                self.close(conn)
                return
            conn.outbox = conn.outbox[sent:]
        if conn.closing:
            self.close(conn)

    def tick(self) -> None:
        """Once a loop turn: push pending output, drop silent or stuck clients."""
        now = time.monotonic()
        for conn in list(self.conns.values()):
            self.flush(conn)
            if conn.fd < 0:
                continue
            if conn.outbox and now - conn.sent_at > WRITE_DEADLINE_S:
                self.close(conn)
            elif not conn.waiting and now - max(conn.opened, conn.sent_at) > READ_DEADLINE_S:
                self.close(conn)  # silent (or done and idle): its place is freed

    def close(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self.remove_reader(fd)
            self.conns.pop(fd, None)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def shut(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn)
        if self.listener is not None:
            self.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                self.path.unlink()
