"""The report shows a paused account as such: a note from the pause its journal records."""

from __future__ import annotations

import json
from pathlib import Path

from multirun import report
from multirun.account.journal.store import Journal
from multirun.core.statedir import StateDir


def test_a_journaled_pause_is_a_note_and_a_cleared_one_is_none(tmp_path: Path) -> None:
    layout = StateDir(tmp_path)
    for name in ("a", "b"):
        layout.account(name).path.mkdir(parents=True)
        Journal(layout.account(name).journal, f"mr-{name}-").close()
    journal = Journal(layout.account("a").journal, "mr-a-")
    pause = {"reason": "daily loss 312.40 > 300", "since": 1_796_644_800.0,
             "until": 1_796_688_000.0, "flatten": False}  # fmt: skip
    journal.record_pause(json.dumps(pause))
    journal.close()
    notes = report.build(tmp_path, configured=["a", "b"]).notes
    assert notes == (
        "a: PAUSED since 2026-12-07 12:00 UTC: daily loss 312.40 > 300 (nothing opens "
        "until `multirun resume`, or 2026-12-08 00:00 UTC)",
    )
    journal = Journal(layout.account("a").journal, "mr-a-")
    journal.record_pause(None)
    journal.close()
    assert report.build(tmp_path, configured=["a", "b"]).notes == ()
