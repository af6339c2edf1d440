"""Every reload line says what it does to money (issue 23, case 6): what a removed or
changed account's on_stop does to the trades its journal holds, what an added one adopts;
an edit that makes an account livetrade under a supervisor without --live is refused."""

from __future__ import annotations

from pathlib import Path

from multirun.config import loader as config
from multirun.config.reload_diff import plan

TRADE = "trade 7 SELL 0.1 AUDUSD (mr-coin-aud-ABCDEF-1)"


def spec(tmp_path: Path, *accounts: str) -> config.RunnerSpec:
    body = "".join(
        f"  - name: {name}\n    user: u\n    api_key: k-123456789\n    accountid: '{name}1'\n"
        f"    instrument: AUDUSD\n    strategy: random\n    interval: 1m\n"
        f"{extra}"
        for name, _, extra in (a.partition("|") for a in accounts)
    )
    path = tmp_path / "runner.yaml"
    path.write_text(
        "version: 1\nserver: sim\nstate_dir: ./state\n"
        "defaults:\n  runmode: livetest\n  volume: 0.1\n"
        f"accounts:\n{body}"
    )
    return config.load(path, environ={})


def held(name: str) -> tuple[str, ...]:
    return (TRADE,) if name in ("coin-aud", "kept", "vol", "back") else ()


def test_removed_changed_and_added_accounts_say_what_happens_to_their_trades(
    tmp_path: Path,
) -> None:
    old = spec(tmp_path, "coin-aud", "kept|    on_stop: keep\n", "vol|    on_stop: keep\n", "same")
    new = spec(tmp_path, "vol|    on_stop: keep\n    volume: 0.2\n", "same", "back")
    lines = plan(old, new, held).lines()
    assert lines == [
        f"+ back: added: started; adopts what its journal holds, 1 trade(s): {TRADE}",
        f"- coin-aud: removed: stopped; on_stop close: closes 1 trade(s): {TRADE}",
        f"- kept: removed: stopped; on_stop keep: leaves 1 trade(s): {TRADE} open, journaled "
        f"(`multirun close {new.path} kept` closes them)",
        f"~ vol: volume 0.1 -> 0.2: restarted; on_stop keep: 1 trade(s): {TRADE} stay open, "
        "adopted by the new process",
        "= same: unchanged: same process, its positions untouched",
    ]


def test_an_edit_to_livetrade_without_live_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    old = spec(tmp_path, "a")
    new = spec(tmp_path, "a|    runmode: livetrade\n")
    refused = plan(old, new, live=False)
    assert not refused.ok
    assert refused.lines()[0] == (
        f"! a: runmode livetrade trades real money and this supervisor was started without "
        f"--live (a was runmode livetest): put the old value back, or stop and `multirun "
        f"start {new.path} --live`"
    )
    assert refused.lines()[1] == "~ a: runmode livetest -> livetrade"  # no effect promised
    assert plan(old, new, live=True).ok  # started with --live: a plain change


def test_a_supervisor_setting_says_no_account_restarts(tmp_path: Path) -> None:
    old = spec(tmp_path, "a")
    new = spec(tmp_path, "a")
    text = new.path.read_text().replace("version: 1\n", "version: 1\nstop_timeout: 45\n")
    new.path.write_text(text)
    lines = plan(old, config.load(new.path, environ={})).lines()
    assert lines[-1].startswith("~ (supervisor) stop_timeout: ")
    assert lines[-1].endswith(": applied live, no account restarts"), lines
