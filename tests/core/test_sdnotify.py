"""sd_notify over a real unix datagram socket: READY=1, WATCHDOG=1, start-up extensions."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from multirun.core.sdnotify import SdNotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_then_watchdog_beats_at_most_once_per_interval(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    now = [100.0]
    sd = SdNotify(path, extend_s=60, every_s=1.0, clock=lambda: now[0])
    sd.beat()  # before READY=1: asks for more start-up time
    assert sock.recv(256) == b"EXTEND_TIMEOUT_USEC=60000000"
    sd.ready("account a running")
    assert sock.recv(256) == b"READY=1\nSTATUS=account a running"
    sd.ready()  # once only
    now[0] += 1.0
    sd.beat()
    sd.beat()  # within the interval: nothing sent
    now[0] += 1.0
    sd.beat()
    sd.stopping()
    sock.settimeout(0.1)
    got = []
    while True:
        try:
            got.append(sock.recv(256))
        except TimeoutError:
            break
    assert got == [b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]


def test_an_abstract_socket_address_and_no_socket_at_all() -> None:
    name = f"multirun-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        sd = SdNotify.from_environ({"NOTIFY_SOCKET": f"@{name}"})
        sd.ready()
        assert sock.recv(64) == b"READY=1"
    quiet = SdNotify.from_environ({})
    assert not quiet.enabled and quiet.send("READY=1") is False
    quiet.ready()
    quiet.beat()  # no socket: nothing happens, nothing raises


def test_a_socket_gone_is_ignored(tmp_path: Path) -> None:
    sd = SdNotify(str(tmp_path / "gone.sock"))
    assert sd.send("READY=1") is False
    sd.ready()
    sd.beat()
