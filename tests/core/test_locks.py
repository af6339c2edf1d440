"""core.locks: one exclusive lock per file, and knowing when it stopped guarding its path."""

from __future__ import annotations

import os
from pathlib import Path

from multirun.core.locks import HeldLock, is_held, read_holder


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    first = HeldLock.try_acquire(path)
    assert first is not None and is_held(path)
    assert HeldLock.try_acquire(path) is None  # flock is per open file: same process suffices
    first.release()
    assert not is_held(path)
    second = HeldLock.try_acquire(path)
    assert second is not None
    second.release()


def test_lost_names_a_deleted_or_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    lock = HeldLock.try_acquire(path)
    assert lock is not None and lock.lost() is None
    path.unlink()
    assert "deleted" in (lock.lost() or "")
    path.write_text("someone else's")
    assert "replaced" in (lock.lost() or "")
    lock.release()
    assert "released" in (lock.lost() or "")


def test_the_holder_record_is_written_in_place(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    lock = HeldLock.try_acquire(path)
    assert lock is not None
    inode = os.stat(path).st_ino
    lock.write('{"pid": 1}')
    lock.write('{"pid": 2}')
    assert read_holder(path) == b'{"pid": 2}' and os.stat(path).st_ino == inode
    assert os.stat(path).st_mode & 0o777 == 0o600
    lock.release()


def test_waiting_holds_for_the_block_only(tmp_path: Path) -> None:
    path = tmp_path / "renew.lock"
    with HeldLock.waiting(path):
        assert is_held(path)
    assert not is_held(path)
