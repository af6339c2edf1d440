"""What the dashboard keeps between builds (an account's merged row, its masked dict, its
row of the page, its encoded bytes: each reused while none of its inputs changed) never
shows a stale row: after each input of a row changes, and as time alone moves, the page's
documents are those a dashboard made afresh at that moment sends."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from multirun.account.journal import schema
from multirun.core.redact import Redactor
from multirun.core.statefiles import SupervisorFile
from multirun.ops import locate
from multirun.web.actions import effects
from multirun.web.fleet import AccountFacts, Fleet
from multirun.web.guard import Guard
from multirun.web.server import Dashboard
from tests.clocks import ManualClock
from tests.web.test_serving import KEY

MIDNIGHT = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STARTED = "2025-12-31T23:00:00.000Z"
ORDER = (
    "INSERT INTO orders (order_ref, instrument, side, volume, state, created_ts)"
    " VALUES (?, 'BTCUSD', 'BUY', 1.0, 'OPEN', ?)"
)


class Supervisor:
    """Answers ``status`` as the arbiter does: "unchanged" while nothing was saved."""

    def __init__(self) -> None:
        entry = {"state": "RUNNING", "pid": 99, "started_utc": STARTED, "restarts": 0}
        beta = {**entry, "pid": 98, "started_utc": None}  # no uptime: nothing moves alone
        self.entries = {"alpha": dict(entry), "beta": beta}
        self.saves = 0

    def save(self, name: str, **changes: Any) -> None:
        self.entries[name].update(changes)
        self.saves += 1

    def __call__(self, state_dir: Path, payload: dict[str, Any]) -> dict[str, Any]:
        generation = f"4242.{self.saves}"
        if payload.get("unless") == generation:
            return {"ok": True, "generation": generation, "unchanged": True}
        accounts = copy.deepcopy(self.entries)  # parsed afresh: new objects, as a reply's
        return {"ok": True, "pid": 4242, "generation": generation, "accounts": accounts}


class Setup:
    """A state directory of two accounts, a supervisor answering for them, a clock."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.clock = ManualClock(start=MIDNIGHT - 30.0)
        self.supervisor = Supervisor()
        self.in_file: tuple[tuple[str, bool], ...] = (("alpha", True), ("beta", True))
        for name, pid in (("alpha", 99), ("beta", 98)):
            (where / name).mkdir()
            self.write_status(name, pid=pid, ticks=1, last_error=None)
            schema.connect(where / name / "journal.sqlite").close()

    def write_status(self, name: str, *, held: int = 1, **fields: Any) -> None:
        status = {"name": name, "state": "RUNNING", "nav": 1000.0, **fields}
        status["positions"] = [{"instrument": "BTCUSD", "side": "BUY", "volume": 1}] * held
        path = self.where / name / "status.json"
        path.write_text(json.dumps(status))

    def dashboard(self) -> Dashboard:
        running = locate.Running(pid=4242, config=None, data=SupervisorFile())
        facts = AccountFacts("random", "BTCUSD", "close")
        fleet = Fleet(
            self.where,
            file_view=lambda: locate.FileView(self.where / "runner.yaml", self.where, self.in_file),
            accounts={"alpha": facts, "beta": facts},
            redactor=Redactor([KEY]),
            clock=self.clock.time,
            ask=self.supervisor,
            running=lambda state_dir: running,
        )
        guard = Guard("127.0.0.1", 0, token=None, read_only=False)
        return Dashboard(fleet, guard, None, host="127.0.0.1", port=0)  # type: ignore[arg-type]


def encoded_whole(page: Dashboard) -> bytes:
    """``/api/fleet``'s body as json.dumps writes the view with its actions' sentences."""
    view = page.fleet.view()
    table: list[dict[str, str]] = []
    rows = []
    for row in view["accounts"]:
        found = effects(row["on_stop"], row["positions"] or [])
        if found not in table:
            table.append(found)
        rows.append({**row, "effects_id": table.index(found)})
    whole = {**view, "accounts": rows, "effects": table, "read_only": False}
    return json.dumps(whole, separators=(",", ":")).encode()


def documents(page: Dashboard) -> tuple[bytes, str]:
    """``/api/fleet``'s and ``/api/status``'s bodies as a poll past the view's 2 s gets."""
    page.fleet._cache.pop("view", None)
    page.fleet._cache.pop("status", None)
    return page.fleet_json(), json.dumps(page.fleet.status())


def test_a_kept_row_is_what_a_fresh_dashboard_shows_after_each_of_its_inputs_changes(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path)
    kept = setup.dashboard()

    def same_as_fresh() -> dict[str, Any]:
        fresh = setup.dashboard()  # first: its first read of a journal may make its -wal
        expected = documents(fresh)
        fresh.fleet.close()
        found = documents(kept)
        assert found == expected and found[0] == encoded_whole(kept)
        assert KEY not in found[0].decode() + found[1]
        rows: dict[str, Any] = {r["name"]: r for r in json.loads(found[0])["accounts"]}
        return rows

    def expire_today() -> None:  # its 15 s run out (a monotonic time: not the clock's)
        kept.fleet._cache.pop("today:alpha", None)

    first = same_as_fresh()
    beta_bytes = kept._fleet_rows["beta"]
    setup.clock.advance(2.0)  # time alone: the uptime moves, nothing else
    rows = same_as_fresh()
    assert rows["alpha"]["uptime_s"] == first["alpha"]["uptime_s"] + 2.0
    assert kept._fleet_rows["beta"] is beta_bytes  # kept, the uptime put in its bytes
    setup.write_status("alpha", pid=99, ticks=2, last_error=f"login: api_key {KEY} refused")
    rows = same_as_fresh()  # the status file rewritten: masked
    assert rows["alpha"]["ticks"] == 2 and "login: api_key" in rows["alpha"]["last_error"]
    setup.write_status("alpha", pid=99, ticks=3, last_error=None, held=0)
    rows = same_as_fresh()  # beta unchanged, its actions' sentences now second in the list
    assert (rows["alpha"]["effects_id"], rows["beta"]["effects_id"]) == (0, 1)
    setup.supervisor.save("alpha", restarts=3)  # its entry changed
    assert same_as_fresh()["alpha"]["restarts"] == 3
    setup.supervisor.save("alpha", state="BACKOFF", pid=None)
    assert same_as_fresh()["alpha"]["state"] == "BACKOFF"
    setup.in_file = (("alpha", True),)  # beta out of the file: its note says so
    assert same_as_fresh()["beta"]["note"] == "not in the file any more"
    writer = schema.connect(tmp_path / "alpha" / "journal.sqlite")
    writer.execute(ORDER, ("r1", setup.clock.now))
    writer.close()
    documents(kept)  # within today's 15 s: its figures as they were, its version new
    expire_today()
    rows = same_as_fresh()  # the journal written, read
    assert rows["alpha"]["orders_today"] == 1
    assert rows["alpha"]["trades_version"] != first["alpha"]["trades_version"]
    with (tmp_path / "alpha" / "worker.log").open("a") as log:
        log.write(f"2026-01-01T00:00:00.000Z stdout key {KEY}\n")
    assert same_as_fresh()["alpha"]["logs_version"] != rows["alpha"]["logs_version"]
    setup.clock.advance(60.0)  # past midnight: a new day, no order in it yet
    expire_today()
    rows = same_as_fresh()
    assert rows["alpha"]["orders_today"] == 0
    kept.fleet.close()
