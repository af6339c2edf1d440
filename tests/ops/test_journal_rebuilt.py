"""A journal rebuilt after damage (issue 23, case 10) is said by `status` and by
`validate --online`; a damaged one not yet set aside too."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from multirun.account.journal.store import Journal
from multirun.cli.app import app
from multirun.core.statedir import StateDir
from multirun.ops.status import Snapshot, merge, render_json, render_text
from tests.ops.test_online_check import ACCOUNTS, KEY, entry

LINE = (
    "journal rebuilt from the server at 2026-01-02T03:04:05.000+00:00: the damaged one "
    "(database disk image is malformed) is kept as /s/a/journal.corrupt-20260102T030405Z.sqlite"
)
SUP = {"state": "RUNNING", "pid": 42, "started_utc": "2026-01-02T03:00:00+00:00"}


def test_status_notes_a_rebuilt_journal_on_the_row_and_in_json() -> None:
    row = merge("a", SUP, {"pid": 42, "state": "RUNNING", "journal_rebuilt": LINE},
                running=True, now=0.0)  # fmt: skip
    snapshot = Snapshot(42, True, [row])
    assert "(journal rebuilt from the server: a damaged one set aside)" in render_text(snapshot)
    assert json.loads(render_json(snapshot))["accounts"][0]["journal_rebuilt"] == LINE


def test_validate_online_says_a_journal_is_damaged_then_rebuilt(
    sim_factory, tmp_path: Path
) -> None:
    sim = sim_factory(accounts=ACCOUNTS)
    path = tmp_path / "runner.yaml"
    path.write_text(f"server: {sim.base_url}\nstate_dir: {tmp_path / 'state'}\naccounts:\n"
                    + entry("alpha"), encoding="utf-8")  # fmt: skip
    account = StateDir(tmp_path / "state").account("alpha")
    account.path.mkdir(parents=True)
    account.journal.write_bytes(b"garbage " * 512)

    def online() -> dict[str, object]:
        result = CliRunner().invoke(
            app, ["validate", "--online", "--json", str(path)], env={"ONLINE_KEY": KEY}
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["online"]["accounts"][0]

    assert "is damaged (file is not a database)" in str(online()["journal"])
    Journal.for_account(account, "mr-alpha-").close()  # as a start or `multirun close` does
    assert str(online()["journal"]).startswith("journal rebuilt from the server at ")
