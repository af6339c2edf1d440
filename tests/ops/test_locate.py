"""locate: a runner.yaml read tolerantly, for status and stop while it is broken."""

from __future__ import annotations

from pathlib import Path

from multirun.ops import locate


def test_a_parseable_file_gives_state_dir_accounts_and_stop_timeout(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text(
        "state_dir: ${WHERE:-st}\nstop_timeout: 12\ndefaults:\n  enabled: false\n"
        "accounts:\n  - name: a\n  - name: b\n    enabled: true\n  - 7\n"
        "  - name: c\n    strategy: no_such_module_anywhere:X\n"
    )
    view = locate.read_file(path, environ={})
    assert view.state_dir == tmp_path / "st" and view.stop_timeout_s == 12.0
    assert view.accounts == (("a", False), ("b", True), ("c", False)) and view.problem is None
    assert locate.read_file(path, environ={"WHERE": "/srv/x"}).state_dir == Path("/srv/x")


def test_a_file_that_does_not_parse_still_yields_its_state_dir(tmp_path: Path) -> None:
    path = tmp_path / "runner.yaml"
    path.write_text("version: 1\nstate_dir: 'run/state'  # here\naccounts:\n  - name: [oops\n")
    view = locate.read_file(path)
    assert view.state_dir == tmp_path / "run" / "state"
    assert view.accounts is None and view.problem
    path.write_text("accounts: [\n")
    assert locate.read_file(path).state_dir == tmp_path / ".multirun"  # the default


def test_state_dir_option_needs_no_file(tmp_path: Path) -> None:
    where = locate.target(tmp_path / "missing.yaml", tmp_path / "s")
    assert where.state_dir == tmp_path / "s" and where.file is None and where.running is None
    assert where.foreign is None and where.stop_timeout_s == 30.0
