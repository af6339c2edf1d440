"""What keeps three open pages cheap: a page fetches an account's log tail and trades
only when its row's version moved; the journals are read through one read-only
connection each, kept between reads; the supervisor is asked ``unless`` its last reply
is still current; the state directory is listed again only when it changed; the
actions' sentences are sent once for the rows that share them."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import pytest

from multirun.account.journal import reader, schema
from multirun.core.redact import Redactor
from multirun.core.statedir import StateDir
from multirun.core.statefiles import SupervisorFile
from multirun.ops import locate
from multirun.web.actions import effects
from multirun.web.fleet import TRADE_ROWS, Fleet
from multirun.web.guard import Guard
from multirun.web.server import Dashboard
from tests.conftest import wait_until
from tests.supervisor.test_control_kept import Loop
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


def test_activity_reads_what_was_created_and_the_navs_since_a_time(tmp_path: Path) -> None:
    journal, since = tmp_path / "journal.sqlite", 1_800_000_000.0
    writer = schema.connect(journal)
    writer.execute(ORDER, ("r1", since - 1))
    writer.execute(ORDER, ("r2", since))
    writer.execute("INSERT INTO equity (ts, nav) VALUES (?, 1000.5), (?, NULL)", (since, since))
    writer.close()
    kept = reader.Connections()
    found = reader.activity(journal, "alpha", since, connections=kept)
    assert [c.order_ref for c in found.created] == ["r2"]  # r1 was created before
    assert [p.nav for p in found.navs] == [1000.5]  # a point without a NAV is not one
    kept.close()


def test_activity_of_a_journal_older_than_the_equity_table_has_no_navs(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    db = sqlite3.connect(journal)
    db.execute("CREATE TABLE orders (order_ref TEXT, created_ts REAL)")
    db.execute("INSERT INTO orders VALUES ('old', ?)", (time.time(),))
    db.commit()
    db.close()
    kept = reader.Connections()
    with kept.reading(journal) as first:
        pass
    found = reader.activity(journal, "legacy", 0.0, connections=kept)
    assert [c.order_ref for c in found.created] == ["old"] and found.navs == ()
    with kept.reading(journal) as again:
        assert again is first  # not an error: the connection is kept
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


class FakeSupervisor:
    """Answers ``status`` as the arbiter does: "unchanged" while nothing was saved."""

    def __init__(self) -> None:
        self.saves, self.asked, self.down = 0, [], False
        self.pid = 4242

    def __call__(self, state_dir: Path, payload: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(payload)
        if self.down:
            raise OSError("refused")
        generation = f"{self.pid}.{self.saves}"
        if payload.get("unless") == generation:
            return {"ok": True, "generation": generation, "unchanged": True}
        entry = {"state": "RUNNING", "pid": 99, "restarts": self.saves}
        return {"ok": True, "generation": generation, "pid": self.pid, "accounts": {"alpha": entry}}


def test_the_supervisors_view_is_asked_unless_the_kept_one_is_current(tmp_path: Path) -> None:
    supervisor = FakeSupervisor()
    fleet = Fleet(tmp_path, file_view=lambda: None, accounts={}, redactor=Redactor([]),
                  ask=supervisor)  # fmt: skip
    found = locate.Running(pid=4242, config=None, data=cast(SupervisorFile, {"from": "file"}))
    first = fleet._live_view(tmp_path, found)
    assert first["accounts"]["alpha"]["restarts"] == 0 and "unless" not in supervisor.asked[-1]
    again = fleet._live_view(tmp_path, found)  # "unchanged": the kept reply, its accounts
    assert again["accounts"] is first["accounts"]  # the very entries: no row built again
    assert supervisor.asked[-1]["unless"] == "4242.0"
    supervisor.saves += 1
    assert fleet._live_view(tmp_path, found)["accounts"]["alpha"]["restarts"] == 1
    supervisor.down = True
    assert fleet._live_view(tmp_path, found) == {"from": "file"}  # no answer: its file
    supervisor.down = False
    assert fleet._live_view(tmp_path, found)["accounts"]["alpha"]["restarts"] == 1
    assert "unless" not in supervisor.asked[-1]  # nothing kept across a failure
    other = locate.Running(pid=5151, config=None, data=cast(SupervisorFile, {"from": "file"}))
    assert fleet._live_view(tmp_path, other) == {"from": "file"}  # another pid's: not its
    assert "unless" not in supervisor.asked[-1]  # the reply kept was another supervisor's


def test_the_accounts_listed_with_a_journal_as_the_state_dir_changes(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, file_view=lambda: None, accounts={}, redactor=Redactor([]))
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "journal.sqlite").touch()
    (tmp_path / "empty").mkdir()
    old = time.time_ns() - 10_000_000_000  # long ago: the listing is kept
    os.utime(tmp_path, ns=(old, old))
    assert fleet._account_names() == ["alpha"] == StateDir(tmp_path).account_names()
    (tmp_path / "empty" / "journal.sqlite").touch()  # the state dir itself unchanged
    assert fleet._account_names() == ["alpha", "empty"]
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / "journal.sqlite").touch()
    os.utime(tmp_path, ns=(old + 1000, old + 1000))  # changed, and long ago
    assert fleet._account_names() == ["alpha", "beta", "empty"]
    (tmp_path / "alpha" / "journal.sqlite").unlink()
    assert fleet._account_names() == ["beta", "empty"] == StateDir(tmp_path).account_names()


def test_the_actions_sentences_are_sent_once_for_the_rows_that_share_them() -> None:
    guard = Guard("127.0.0.1", 0, token=None, read_only=False)
    page = Dashboard(None, guard, None, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    long = {"side": "BUY", "volume": 0.5, "instrument": "BTCUSD", "unrealized_pl": 1.0}
    again = {**long, "unrealized_pl": 2.0}  # another P&L: the same sentences
    rows = [{"name": "a", "on_stop": "close", "positions": []},
            {"name": "b", "on_stop": "close", "positions": None},
            {"name": "c", "on_stop": "keep", "positions": [long]},
            {"name": "d", "on_stop": "keep", "positions": [again]}]  # fmt: skip
    view = json.loads(page._encode_view({"accounts": rows}))
    table, ids = view["effects"], [row["effects_id"] for row in view["accounts"]]
    assert ids == [0, 0, 1, 1] and len(table) == 2
    for row, place in zip(rows, ids, strict=True):
        assert table[place] == effects(row["on_stop"], row["positions"] or [])
    assert table[1]["stop"] == "leaves 1 BUY 0.5 BTCUSD open"


def test_a_row_is_merged_again_only_when_its_inputs_changed_and_its_uptime_moves(
    tmp_path: Path,
) -> None:
    supervisor = FakeSupervisor()
    fleet = Fleet(tmp_path, file_view=lambda: None, accounts={}, redactor=Redactor([]),
                  ask=supervisor)  # fmt: skip
    entry = {"state": "RUNNING", "pid": 99, "started_utc": "2026-01-02T03:04:05Z"}
    status: dict[str, Any] = {"pid": 99, "ticks": 1, "state": "RUNNING"}
    first = fleet._row_of("alpha", entry, status, running=True, now=1767323145.0)  # +100 s
    assert (first.state, first.uptime_s) == ("RUNNING", 100.0)
    later = fleet._row_of("alpha", entry, status, running=True, now=1767323205.0)
    assert later is first and later.uptime_s == 160.0  # the same inputs: only the uptime
    halted = {**status, "state": "HALTED", "halted_reason": "daily loss"}  # a new status file
    now = fleet._row_of("alpha", entry, halted, running=True, now=1767323205.0)
    assert (now.state, now.halted_reason) == ("HALTED", "daily loss")
    placed = fleet._row_of("alpha", entry, halted, running=True, now=1.0, placed="elsewhere")
    assert placed is not now and placed.note == "elsewhere"  # its place in the fleet: a note
    assert fleet._row_of("alpha", entry, halted, running=False, now=1.0).state == "STOPPED"


def test_supervisor_json_is_parsed_again_when_it_changed(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, file_view=lambda: None, accounts={}, redactor=Redactor([]))
    layout = StateDir(tmp_path)

    def write(restarts: int, mtime_ns: int) -> None:
        layout.supervisor_json.write_text(json.dumps({"pid": 7, "restarts": restarts}))
        os.utime(layout.supervisor_json, ns=(mtime_ns, mtime_ns))

    def restarts() -> object:
        return dict(fleet._read_supervisor(layout)).get("restarts")

    old = time.time_ns() - 10_000_000_000
    for count in (0, 1):
        write(count, old + count)
        first = fleet._read_supervisor(layout)
        assert restarts() == count
        assert fleet._read_supervisor(layout) is first  # unchanged: not parsed again


FULL = (
    "INSERT INTO orders (order_ref, instrument, side, volume, state, created_ts, closed_ts)"
    " VALUES (?, 'BTCUSD', 'BUY', 1.0, ?, ?, ?)"
)


def test_the_trades_shown_are_the_days_newest_and_every_one_held_however_old(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(tmp_path)
    journal, now = tmp_path / "alpha" / "journal.sqlite", time.time()
    writer = schema.connect(journal)
    writer.execute(FULL, ("held-since-yesterday", "OPEN", now - 86400 * 2, None))
    for i in range(TRADE_ROWS + 5):
        writer.execute(FULL, (f"r{i:03d}", "CLOSED", now - 1000 + i, now - 999 + i))
    writer.close()
    refs = [t["order_ref"] for t in fleet.trades("alpha")]
    newest = [f"r{i:03d}" for i in reversed(range(5, TRADE_ROWS + 5))]
    assert refs == [*newest, "held-since-yesterday"]  # newest first; the held one kept
    kept = reader.Connections()
    found = reader.newest_trades(journal, "alpha", since=now - 1000, newest=3, connections=kept)
    assert [t.order_ref for t in found] == [
        "held-since-yesterday", f"r{TRADE_ROWS + 2:03d}", f"r{TRADE_ROWS + 3:03d}",
        f"r{TRADE_ROWS + 4:03d}"]  # fmt: skip
    kept.close()
    fleet.close()


def test_the_supervisor_is_asked_on_one_connection_kept_between_builds() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # a short path for the socket
        loop = Loop(StateDir(Path(tmp)).control_socket)
        fleet = Fleet(Path(tmp), file_view=lambda: None, accounts={}, redactor=Redactor([]))
        try:
            said = [fleet.ask(Path(tmp), {"cmd": "status", "n": n})["said"] for n in range(3)]
            assert said == [0, 1, 2] and loop.accepted == 1
            fleet.close()  # and closed with the fleet
            wait_until(lambda: not loop.server.conns, 5)  # the kept one closed
        finally:
            loop.done.set()
            loop.thread.join(timeout=5)
