"""Linux-only calls each have a fallback (macOS): simulated by removing or breaking them."""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from multirun.cli import app as cli
from multirun.core import procutil
from multirun.supervisor import control_server as control


@pytest.mark.parametrize("nonblocking", [False, True])
def test_pipe_without_pipe2_is_cloexec_and_as_blocking_as_asked(
    monkeypatch: pytest.MonkeyPatch, nonblocking: bool
) -> None:
    monkeypatch.delattr(os, "pipe2", raising=False)
    r, w = procutil.pipe(nonblocking=nonblocking)
    try:
        for fd in (r, w):
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert os.get_blocking(fd) is not nonblocking
        os.write(w, b"x")
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_prctl_runs_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each forked worker asks for its death signal: through the process's own symbols,
    not ctypes.util.find_library (an `ldconfig -p` subprocess and ~1 MiB of copied pages
    per worker)."""

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("a subprocess to find libc")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(ctypes.util, "find_library", no_subprocess)
    current = ctypes.c_int()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(2, ctypes.byref(current), 0, 0, 0) == 0  # PR_GET_PDEATHSIG
    assert procutil.set_parent_death_signal(current.value) is True  # set to what it was


@pytest.mark.process
def test_no_prctl_off_linux_or_when_libc_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert procutil.set_parent_death_signal(1) is False
    monkeypatch.setattr(sys, "platform", "linux")

    def no_libc(*args: object, **kwargs: object) -> None:
        raise OSError("no libc")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert procutil.set_parent_death_signal(1) is False


@pytest.mark.process
def test_without_proc_the_process_helpers_answer_from_kill(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(procutil, "PROC", tmp_path / "no-proc")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert procutil.cmdline(os.getpid()) is None
    assert procutil.looks_like_multirun(os.getpid())  # unknown: trust the pidfile lock
    assert not procutil.exited(os.getpid())
    assert procutil.exited(child.pid)
    assert not procutil.looks_like_multirun(child.pid)


def test_peer_uid_unknown_where_the_platform_cannot_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert control.peer_uid(a) == os.getuid()
        monkeypatch.delattr(socket, "SO_PEERCRED", raising=False)
        monkeypatch.setattr(sys, "platform", "freebsd14")
        assert control.peer_uid(a) is None  # the socket's 0600 mode alone then


def test_windows_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "argv", ["multirun", "start"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "multirun: error: Windows is not supported (Linux and macOS only)\n"
