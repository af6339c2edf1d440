"""What one account's start and stop cost (issue 14 target 4: 500 accounts up in < 10 s,
stopped in < 5 s): a new journal's schema in one commit, with the schema a migrated one
has; a reconcile and an on_stop close with nothing to do list the server's trades once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from multirun.account.journal import schema as journal_schema
from multirun.account.journal import store as journal_module
from multirun.account.journal.store import Journal
from multirun.account.on_stop import Closer, StopWindow
from multirun.account.reconcile import DEFAULT_TIMING, Reconciler
from multirun.account.ticker import StopFlag
from multirun.api.client import AlgogeneClient
from multirun.core.redact import Secret
from multirun.core.statedir import StateDir
from multirun.sim import SimServer

PREFIX = "mr-a-"
API_KEY = "sim-key-9f8e7d6c5b4a3210"
LISTINGS = ("opened_trades", "pending_trades")


def shape(path: Path) -> dict[str, object]:
    """Every table's columns (name, type, not null, default, key) and every index."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        found: dict[str, object] = {
            t: [tuple(c[1:]) for c in db.execute(f"PRAGMA table_info({t})")] for t in tables
        }
        indexes = "SELECT name, tbl_name FROM sqlite_master WHERE type='index'"
        found["indexes"] = sorted((r[0], r[1]) for r in db.execute(indexes))
        found["version"] = journal_schema.version(db)
        return found
    finally:
        db.close()


def test_a_new_journal_has_the_schema_an_old_one_migrates_to(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.executescript(journal_schema._SCHEMA_V1)  # a version 0 journal, as first released
    db.close()
    Journal(old, PREFIX).close()
    new = tmp_path / "new.sqlite"
    Journal(new, PREFIX).close()
    assert shape(new) == shape(old)
    assert shape(new)["version"] == journal_schema.VERSION


def statements(path: Path, action: str) -> list[str]:
    """The statements ``migrate`` runs on the database at ``path``."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    try:
        journal_schema.migrate(db)
    finally:
        db.close()
    assert seen, action
    return seen


def test_a_new_journal_gets_its_schema_in_one_transaction(tmp_path: Path) -> None:
    run = statements(tmp_path / "j.sqlite", "new")
    assert [s for s in run if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert not [s for s in run if s.startswith("ALTER")]


def test_a_current_journal_opens_without_a_write(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, PREFIX).close()
    run = statements(path, "current")
    assert not [s for s in run if s.startswith(("BEGIN", "CREATE", "ALTER", "COMMIT"))]


def listings(sim: SimServer) -> int:
    counts = sim.stats()["requests"]
    return sum(counts.get(name, 0) for name in LISTINGS)


def account(sim: SimServer, tmp_path: Path) -> tuple[AlgogeneClient, Journal, Reconciler]:
    stop = StopFlag()
    client = AlgogeneClient(
        sim.base_url, "alice", Secret(API_KEY), "livetest", "A1", interrupt=StopWindow(stop)
    )
    journal = Journal(tmp_path / "journal.sqlite", PREFIX)
    reconciler = Reconciler(client, journal, stop=stop, timing=DEFAULT_TIMING, started=time.time())
    return client, journal, reconciler


def test_reconciling_with_nothing_journaled_lists_once(sim: SimServer, tmp_path: Path) -> None:
    client, journal, reconciler = account(sim, tmp_path)
    try:
        before = listings(sim)
        reconciler.reconcile()
        assert reconciler.reconciled
        assert listings(sim) - before == 2  # opened and pending, once
    finally:
        client.close()
        journal.close()


def test_on_stop_close_with_nothing_open_lists_once(sim: SimServer, tmp_path: Path) -> None:
    client, journal, reconciler = account(sim, tmp_path)
    try:
        reconciler.reconcile()
        before = listings(sim)
        window = StopWindow(StopFlag())
        outcome = Closer(client, journal, reconciler, window).run(time.monotonic() + 10)
        assert outcome.ok and not outcome.left
        # the sync (opened only: nothing in flight), then ours (opened and pending);
        # listing again at once, and syncing an empty journal again, add nothing
        assert listings(sim) - before == 3
    finally:
        client.close()
        journal.close()


IDENTITY = {"server": "http://x/rest/v1", "user": "u", "runmode": "livetest", "accountid": "A"}


def test_a_new_journal_commits_its_epoch_and_identity_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[str] = []
    connect = journal_module.connect

    def traced(path: Path, **kwargs: Any) -> sqlite3.Connection:
        db = connect(path, **kwargs)  # the schema: one commit of its own (tested above)
        db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        return db

    monkeypatch.setattr(journal_module, "connect", traced)
    account = StateDir(tmp_path).account("alpha")
    journal = Journal.for_account(account, PREFIX, identity=IDENTITY)
    assert journal.is_new and journal.identity() == IDENTITY
    journal.close()
    assert commits == ["COMMIT"]
    commits.clear()
    again = Journal.for_account(account, PREFIX, identity=IDENTITY)  # nothing new to write
    assert not again.is_new and again.identity() == IDENTITY and again.epoch == journal.epoch
    again.close()
    assert commits == []
    moved = {**IDENTITY, "accountid": "B"}
    third = Journal.for_account(account, PREFIX, identity=moved)  # a changed identity: written
    assert third.identity() == moved
    third.close()
