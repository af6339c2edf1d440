"""A page fetches an account's log tail and trades only when its row's version moved;
the journals are read through one read-only connection each, kept between reads."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from multirun.account.journal import reader, schema
from multirun.web.fleet import Fleet
from tests.web.test_serving import make_fleet

ORDER = (
    "INSERT INTO orders (order_ref, instrument, side, volume, state, created_ts)"
    " VALUES (?, 'BTCUSD', 'BUY', 1.0, 'OPEN', ?)"
)


def write_order(journal: Path, ref: str) -> None:
    writer = schema.connect(journal)
    try:
        writer.execute(ORDER, (ref, time.time()))
    finally:
        writer.close()


def refs(log: reader.AccountLog) -> list[str]:
    return [t.order_ref for t in log.trades]


def test_a_kept_connection_sees_each_commit_never_writes_and_follows_a_replaced_file(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.sqlite"
    write_order(journal, "r1")
    kept = reader.Connections()
    assert refs(reader.read(journal, "alpha", connections=kept)) == ["r1"]
    writer = schema.connect(journal)  # a live worker: its connection stays open
    writer.execute(ORDER, ("r2", time.time()))
    assert refs(reader.read(journal, "alpha", connections=kept)) == ["r1", "r2"]
    with kept.reading(journal) as db, pytest.raises(sqlite3.OperationalError):
        db.execute("DELETE FROM orders")  # read-only: never a writer
    writer.execute(ORDER, ("r3", time.time()))
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # not held back by the idle reader
    assert writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    writer.close()
    assert refs(reader.read(journal, "alpha", connections=kept)) == ["r1", "r2", "r3"]
    for suffix in ("", "-wal", "-shm"):  # set aside, a new journal made in its place
        side = journal.with_name(journal.name + suffix)
        if side.exists():
            side.rename(tmp_path / f"damaged{suffix}")
    write_order(journal, "fresh")
    assert refs(reader.read(journal, "alpha", connections=kept)) == ["fresh"]
    journal.unlink()
    with pytest.raises(reader.JournalError):
        reader.read(journal, "alpha", connections=kept)
    kept.close()


def row(fleet: Fleet) -> dict[str, object]:
    fleet._cache.clear()  # the view as it is now, not the one kept for a poll
    (found,) = fleet.view()["accounts"]
    return found


def test_a_rows_versions_move_with_its_log_and_journal_and_the_answers_are_that_new(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(tmp_path)
    log, journal = tmp_path / "alpha" / "worker.log", tmp_path / "alpha" / "journal.sqlite"
    log.write_text("2026-01-02T03:04:05.678Z stdout first\n")
    write_order(journal, "r1")
    first = row(fleet)
    assert [t["order_ref"] for t in fleet.trades("alpha")] == ["r1"]
    assert [x["line"] for x in fleet.logs("alpha")] == ["first"]
    assert row(fleet)["logs_version"] == first["logs_version"]  # nothing new: no fetch
    assert row(fleet)["trades_version"] == first["trades_version"]
    with log.open("a") as out:
        out.write("2026-01-02T03:04:06.000Z stdout second\n")
    moved = row(fleet)
    assert moved["logs_version"] != first["logs_version"]
    assert moved["trades_version"] == first["trades_version"]
    assert [x["line"] for x in fleet.logs("alpha")] == ["first", "second"]  # at once
    write_order(journal, "r2")
    assert row(fleet)["trades_version"] != moved["trades_version"]
    assert [t["order_ref"] for t in fleet.trades("alpha")] == ["r2", "r1"]  # at once
    fleet.close()
