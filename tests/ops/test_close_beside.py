"""`multirun close` beside a running supervisor (issue 23, case 5), in-process, the ledger
as judge: a renamed account's journal closes while its successor (same server account)
holds the account lock, the close is priced from the server's history, status.json no
longer shows the position, and the successor's own trade is untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from multirun.account import ownership
from multirun.account.journal.store import Journal
from multirun.config import loader
from multirun.core.statedir import StateDir
from multirun.core.statefiles import read_worker_status, write_worker_status
from multirun.ops.close import close_accounts
from multirun.sim import SimServer
from tests.conftest import SimCaller


def _runner(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "runner.yaml"
    path.write_text(
        f"version: 1\nserver: {server}\nstate_dir: state\nstop_timeout: 5\naccounts:\n"
        "  - name: new\n    user: alice\n    api_key: alice-key\n    accountid: ACC-1\n"
        "    runmode: livetest\n    strategy: random\n    instrument: BTCUSD\n"
        "    volume: 1\n    interval: 1s\n    on_stop: keep\n"
    )
    return path


def _held_by(tmp_path: Path, name: str, server: str, caller: SimCaller) -> tuple[str, str]:
    """Account ``name``'s journal holding one BUY open on the sim: (orderRef, trade id)."""
    account = StateDir(tmp_path / "state").account(name)
    account.path.mkdir(parents=True, exist_ok=True)
    binding = {"server": server, "user": "alice", "runmode": "livetest", "accountid": "ACC-1"}
    journal = Journal.for_account(account, f"mr-{name}-", identity=binding)
    try:
        ref = journal.new_intent("BTCUSD", "BUY", 1.0).order_ref
        trade_id = caller.open(orderRef=ref)
        caller.wait_open(trade_id)
        journal.mark_acked(ref, trade_id)
        journal.record_fill(ref, 100.0, 0.0, "listing")
    finally:
        journal.close()
    write_worker_status(account, {"name": name, "state": "STOPPED", "open_trades": 1,
        "positions": [{"order_ref": ref, "instrument": "BTCUSD", "side": "BUY", "volume": 1.0,
                       "entry_price": 100.0, "unrealized_pl": -3.75}]})  # fmt: skip
    return ref, trade_id


def test_close_of_a_renamed_account_beside_its_successor_prices_and_refreshes_status(
    sim: SimServer, caller: SimCaller, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv(ownership.RUNTIME_ENV, str(tmp_path / "locks"))
    runner = loader.load(_runner(tmp_path, sim.base_url))
    old_ref, old_trade = _held_by(tmp_path, "old", sim.base_url, caller)
    _new_ref, new_trade = _held_by(tmp_path, "new", sim.base_url, caller)  # the successor's
    # the successor's worker holds the account lock, as under a running supervisor
    held = ownership.lock_account(
        sim.base_url, "alice", "livetest", "ACC-1", config=runner.path, name="new"
    )
    try:
        assert close_accounts(runner, ["old"]) == 0
        assert "closing beside account 'new'" in capsys.readouterr().err
        with pytest.raises(ownership.AccountInUse, match=r"account new is running .* stop it"):
            close_accounts(runner, ["new"])  # its own worker runs: stop it first
    finally:
        held.close()

    opened = caller.opened()
    assert old_trade not in opened and new_trade in opened  # the ledger: only old's closed
    journal = Journal(StateDir(tmp_path / "state").account("old").journal, "mr-old-")
    try:
        row = journal.get(old_ref)
        assert row.state == "CLOSED" and row.price_source == "history", row
        ledger = caller.ledger_entry(old_trade)
        assert ledger["status"] == "CLOSED" or ledger["closed_utc"], ledger
        assert row.realized_pl == pytest.approx(ledger["realized_pl"]), (row, ledger)
    finally:
        journal.close()
    status = read_worker_status(StateDir(tmp_path / "state").account("old"))
    assert status["positions"] == [] and status["open_trades"] == 0, status


def test_the_hint_for_a_renamed_account_points_at_real_text(tmp_path: Path) -> None:
    runner = loader.load(_runner(tmp_path, "http://127.0.0.1:1/rest/v1"))
    orphan = ownership.Orphan("old", tmp_path / "state" / "old", ("trade 7 BUY 1 BTCUSD (x)",))
    [line] = ownership.orphan_lines(runner, [orphan])
    assert f"`multirun close {runner.path} old`" in line
    section = line.split("(see docs/operating.md: ", 1)[1].removesuffix(")")
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
    assert f"\n## {section}\n" in docs, section
