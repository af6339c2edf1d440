"""What a control request every second costs: the notifier's kept connection
(:class:`KeptConnection`) against the real :class:`ControlServer`, driven by a select
loop in a thread (many requests on one connection, a new one when the server closed it,
none reused after a late reply), and no turn of the arbiter's loop for a status read."""

from __future__ import annotations

import io
import json
import selectors
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from multirun.core.errors import SupervisorError
from multirun.supervisor.control_server import Conn, ControlServer, KeptConnection
from multirun.supervisor.output import LogRouter
from multirun.supervisor.pipes import Pipes
from tests.conftest import wait_until


class Loop:
    """A ControlServer and the loop turns of an arbiter: its readers, its tick, and the
    test's own steps (run in the loop's thread, as the arbiter's are)."""

    def __init__(self, path: Path) -> None:
        self.selector = selectors.DefaultSelector()
        self.accepted = 0
        self.held: list[Conn] = []  # requests whose reply is held back ("late")
        self.steps: list[Callable[[], None]] = []
        self.server = ControlServer(path, self.handle, add_reader=self.add_reader,
                                    remove_reader=self.selector.unregister, log=print)  # fmt: skip
        self.done = threading.Event()
        self.server.open()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def add_reader(self, fd: int, callback: Callable[[], bool]) -> None:
        if self.server.listener is not None and fd != self.server.listener.fileno():
            self.accepted += 1
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def handle(self, conn: Conn, request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("late"):
            self.held.append(conn)
            return None
        return {"ok": True, "said": request.get("n")}

    def run(self) -> None:
        while not self.done.is_set():
            for key, _ in self.selector.select(0.02):
                key.data()
            while self.steps:
                self.steps.pop(0)()
            self.server.tick()
        self.server.shut()

    def close_all(self) -> None:
        for conn in list(self.server.conns.values()):
            self.server.close(conn)


@pytest.fixture
def loop() -> Iterator[Loop]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        running = Loop(Path(tmp) / "c.sock")
        yield running
        running.done.set()
        running.thread.join(timeout=5)


def test_requests_share_one_connection_and_a_closed_one_is_opened_again(loop: Loop) -> None:
    kept = KeptConnection(loop.server.path, timeout_s=2.0)
    assert [kept({"cmd": "status", "n": n})["said"] for n in range(3)] == [0, 1, 2]
    assert loop.accepted == 1  # one connection for the three
    closed = threading.Event()
    loop.steps.append(lambda: (loop.close_all(), closed.set()))  # the server drops it (idle)
    assert closed.wait(5)
    assert kept({"cmd": "status", "n": 3})["said"] == 3  # the same request, on a new one
    assert loop.accepted == 2
    kept.close()


def test_a_reply_that_came_late_never_answers_the_next_request(loop: Loop) -> None:
    kept = KeptConnection(loop.server.path, timeout_s=0.3)
    with pytest.raises(SupervisorError, match="no reply"):
        kept({"cmd": "status", "late": True})
    late = loop.held.pop()
    loop.steps.append(lambda: loop.server.reply(late, {"ok": True, "said": "late"}))
    assert kept({"cmd": "status", "n": 1})["said"] == 1  # its own reply, on a new connection
    assert loop.accepted == 2
    kept.close()


def test_a_status_request_costs_the_arbiter_no_turn_of_its_loop(tmp_path: Path) -> None:
    """The arbiter's wait goes on after a status reply (it changed nothing); a request
    that may change something (here a deferred one) ends the wait: its turn comes."""
    router = LogRouter.for_accounts([], tmp_path, [], stream=io.StringIO())
    pipes = Pipes(router)
    handled: list[str] = []

    def handle(conn: Conn, request: dict[str, Any]) -> dict[str, Any] | None:
        handled.append(request["cmd"])
        return {"ok": True} if request["cmd"] == "status" else None

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        server = ControlServer(Path(tmp) / "c.sock", handle, add_reader=pipes.add_reader,
                               remove_reader=pipes.remove_reader, log=print)  # fmt: skip
        server.open()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(server.path))
            client.sendall(b'{"v": 1, "cmd": "status"}\n')
            for _ in range(20):  # the accept, then the request: neither stirs the loop
                pipes.select(0.05)
                assert not pipes.stirred
                if handled:
                    break
            assert handled == ["status"] and json.loads(client.recv(4096))["ok"]
            client.sendall(b'{"v": 1, "cmd": "pause"}\n')
            assert wait_until(lambda: pipes.select(0.05) == [] and pipes.stirred, timeout=5)
            assert handled == ["status", "pause"]
        server.shut()
    pipes.shut()
    router.close()
