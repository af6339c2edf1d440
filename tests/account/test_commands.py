"""The command channel, worker side: lines read from the pipe, acted on between ticks only,
and a command waking the worker's sleep at once (no real waiting: the line is in the pipe
before the wait starts, so a wait that did not listen would sleep its whole 5 s)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from multirun.account.commands import CommandClock, CommandReader
from multirun.account.ticker import StopFlag
from multirun.core.statefiles import command_line, read_command


class FakeWorker:
    """The worker as a command sees it."""

    def __init__(self, stop: StopFlag) -> None:
        self.busy = False
        self.ticker: object | None = object()
        self.stop = stop
        self.done: list[tuple[str, str]] = []

    def pause(self, reason: str) -> None:
        self.done.append(("pause", reason))

    def resume(self, reason: str = "resumed by operator") -> None:
        self.done.append(("resume", reason))

    def flatten(self, reason: str) -> None:
        if reason == "boom":
            raise RuntimeError("the server said no")
        self.done.append(("flatten", reason))


Channel = tuple[int, CommandClock, FakeWorker, StopFlag]


@pytest.fixture
def channel() -> Iterator[Channel]:
    read_fd, write_fd = os.pipe()
    stop = StopFlag()
    clock = CommandClock(CommandReader(read_fd))
    worker = FakeWorker(stop)
    clock.actor = worker
    yield write_fd, clock, worker, stop
    clock.reader.close()
    stop.close()
    os.close(write_fd)


def send(fd: int, cmd: str, reason: str) -> None:
    os.write(fd, command_line(cmd, reason).encode() + b"\n")


def test_a_command_wakes_the_sleep_and_acts_at_once(channel: Channel) -> None:
    write_fd, clock, worker, stop = channel
    send(write_fd, "pause", "paused by operator")
    began = time.monotonic()
    assert clock.wait(stop, 5.0) is False
    assert time.monotonic() - began < 1.0
    assert worker.done == [("pause", "paused by operator")]


def test_during_a_tick_commands_wait_then_act_in_order(channel: Channel) -> None:
    write_fd, clock, worker, stop = channel
    worker.busy = True  # a tick (or start-up reconciliation) under way
    send(write_fd, "flatten", "flattened by operator at 10:00:00 UTC")
    os.write(write_fd, b'{"cmd": "pa')  # half a line: not yet a command
    assert clock.wait(stop, 0.0) is False
    assert worker.done == [] and clock.pending  # read (no busy loop on the pipe), not acted
    os.write(write_fd, b'use", "reason": "x"}\n')
    worker.busy = False
    assert clock.wait(stop, 0.0) is False
    assert worker.done == [("flatten", "flattened by operator at 10:00:00 UTC"), ("pause", "x")]


def test_before_ticking_and_after_a_stop_nothing_acts(channel: Channel) -> None:
    write_fd, clock, worker, stop = channel
    worker.ticker = None  # still reconciling
    send(write_fd, "resume", "")
    clock.wait(stop, 0.0)
    assert worker.done == []
    worker.ticker = object()
    stop.set("SIGTERM")
    assert clock.wait(stop, 5.0) is True  # a stop ends the wait, as before
    assert worker.done == []


def test_a_failing_command_is_logged_and_the_next_one_acts(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    write_fd, clock, worker, stop = channel
    send(write_fd, "flatten", "boom")
    os.write(write_fd, b"not json\n")
    send(write_fd, "resume", "")
    clock.wait(stop, 0.0)
    assert worker.done == [("resume", "resume asked by the supervisor")]
    assert "flatten failed: RuntimeError: the server said no" in caplog.text
    assert "not a command" in caplog.text


def test_the_supervisor_gone_closes_the_pipe_and_the_wait_still_sleeps(channel: Channel) -> None:
    write_fd, clock, _worker, stop = channel
    os.close(write_fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), write_fd)  # the fixture closes this fd again
    assert clock.wait(stop, 0.0) is False
    assert clock.reader.fd is None  # EOF: no longer selected (it would spin)


def test_command_lines_round_trip_and_refuse_the_rest() -> None:
    assert read_command(command_line("flatten", "why")) == ("flatten", "why")
    assert read_command('{"cmd": "buy", "reason": "x"}') is None
    assert read_command('{"state": "PAUSED"}') is None
    assert read_command("up") is None


def test_a_pipe_numbered_above_select_s_limit_is_served() -> None:
    """A worker forked by a supervisor of 500 accounts keeps its command pipe's number,
    above 1024: the wait still reads it (select() raised ValueError there)."""
    read_fd, write_fd = os.pipe()
    high = 1500
    try:
        os.dup2(read_fd, high)
    except OSError:
        pytest.skip("this process may not open descriptor 1500")
    os.close(read_fd)
    stop = StopFlag()
    clock = CommandClock(CommandReader(high))
    worker = FakeWorker(stop)
    clock.actor = worker
    sender = threading.Timer(0.05, send, (write_fd, "pause", "paused by operator"))
    try:
        sender.start()  # comes while the wait sleeps on the pipe
        began = time.monotonic()
        assert clock.wait(stop, 5.0) is False
        assert time.monotonic() - began < 1.0
        assert worker.done == [("pause", "paused by operator")]
    finally:
        sender.join()
        clock.reader.close()
        stop.close()
        os.close(write_fd)
