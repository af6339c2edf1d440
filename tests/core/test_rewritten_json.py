"""A file rewritten after every tick (multirun.core.procutil.RewrittenJson): readers see
the old or the new content, and no inode is made or freed by a write; and read_json,
which reads such a file whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from multirun.core import procutil
from multirun.core.procutil import RewrittenJson, read_json


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A monotonic clock moved by hand: ``later[0] += s``."""
    now = [1000.0]
    monkeypatch.setattr(procutil.time, "monotonic", lambda: now[0])
    return now


def test_writes_take_turns_on_two_inodes_that_live_on(tmp_path: Path, later: list[float]) -> None:
    path = tmp_path / "acct" / "status.json"
    status = RewrittenJson(path)
    inodes = set()
    for n in range(6):
        status.write({"ticks": n})
        assert json.loads(path.read_text()) == {"ticks": n}
        inodes.add(os.stat(path).st_ino)
        later[0] += 1.0
    assert inodes == {os.stat(slot).st_ino for slot in status.slots}  # two, reused
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in (path, *status.slots))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        ".status.json.a", ".status.json.b", "status.json"
    ]  # fmt: skip


def test_a_reader_keeps_what_it_opened_however_fast_the_writes(
    tmp_path: Path, later: list[float]
) -> None:
    path = tmp_path / "status.json"
    status = RewrittenJson(path)
    status.write({"ticks": 1, "pad": "x" * 500})
    with path.open() as held:  # a reader, descheduled between its open and its read
        for n in range(2, 6):  # writes closer together than REUSE_AFTER_S
            status.write({"ticks": n})
            later[0] += 0.3
        assert json.loads(held.read()) == {"ticks": 1, "pad": "x" * 500}
    assert json.loads(path.read_text()) == {"ticks": 5}


def test_the_inode_a_previous_run_left_named_is_not_written_first(
    tmp_path: Path, later: list[float]
) -> None:
    path = tmp_path / "status.json"
    RewrittenJson(path).write({"run": 1})
    named = os.stat(path).st_ino
    with path.open() as held:
        RewrittenJson(path).write({"run": 2})  # the next worker of the account
        assert json.loads(held.read()) == {"run": 1}
    assert os.stat(path).st_ino != named and json.loads(path.read_text()) == {"run": 2}


def test_a_shorter_content_leaves_no_tail(tmp_path: Path, later: list[float]) -> None:
    path = tmp_path / "status.json"
    status = RewrittenJson(path)
    for text in ("a" * 900, "b" * 800, "c"):
        status.write({"text": text})
        later[0] += 1.0
        assert json.loads(path.read_text()) == {"text": text}


def test_a_file_system_without_hard_links_gets_a_new_file_each_time(
    tmp_path: Path, later: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # as some network mounts

    monkeypatch.setattr(procutil.os, "link", refused)
    path = tmp_path / "status.json"
    status = RewrittenJson(path)
    for n in range(3):
        status.write({"ticks": n})  # never raises: the status is still written
        later[0] += 1.0
        assert json.loads(path.read_text()) == {"ticks": n}
    assert not status.links


def test_a_link_left_by_a_process_killed_before_its_rename_is_replaced(
    tmp_path: Path, later: list[float]
) -> None:
    path = tmp_path / "status.json"
    status = RewrittenJson(path)
    status.write({"ticks": 1})
    left = path.with_name(f".{path.name}.{os.getpid()}.new")  # a killed process's, same pid
    left.write_text("{}")
    later[0] += 1.0
    status.write({"ticks": 2})
    assert json.loads(path.read_text()) == {"ticks": 2} and not left.exists()


def test_a_json_file_is_read_whole_whatever_its_size(tmp_path: Path) -> None:
    big = {f"acct-{i:04d}": {"state": "RUNNING", "pid": i} for i in range(3000)}  # ~150 KB
    path = tmp_path / "supervisor.json"
    path.write_text(json.dumps({"accounts": big}))
    assert read_json(path) == {"accounts": big}
    path.write_text("[1]")
    assert read_json(path) is None  # not an object
    path.write_text('{"torn": ')
    assert read_json(path) is None and read_json(tmp_path / "missing.json") is None
