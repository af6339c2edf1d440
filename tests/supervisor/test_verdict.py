"""The last line and exit status of a stop come from what the journals hold after the
sweeps (:func:`multirun.account.final_report.verdict`), not from how the workers went."""

from __future__ import annotations

from multirun.account.final_report import CLOSE, KEEP, HeldTrade, Leftover, swept, verdict

TRADE = HeldTrade("mr-a-1", "BUY", 1.0, "BTCUSD", "7")
ORDER = HeldTrade("mr-a-2", "BUY", 1.0, "BTCUSD", None, "INTENT")


def test_nothing_held_is_flat_and_0_however_the_workers_went() -> None:
    assert verdict([Leftover("a", CLOSE), Leftover("b", KEEP)]) == (
        0,
        "stopped; every account flat",
    )
    assert verdict({}) == (0, "stopped; every account flat")


def test_what_on_stop_keep_keeps_is_no_failure_but_is_not_called_flat() -> None:
    code, line = verdict([Leftover("a", KEEP, (TRADE, ORDER)), Leftover("b", CLOSE)])
    assert (code, line) == (
        0,
        "stopped; nothing left open but 2 trade(s) kept (on_stop: keep; listed above)",
    )


def test_anything_left_open_or_unknown_is_1_and_named() -> None:
    left = [Leftover("a", CLOSE, (TRADE, ORDER)), Leftover("b", CLOSE, error="locked")]
    assert verdict(left) == (
        1,
        "stopped; exit status 1: 1 trade(s) left open, 1 order(s) that may have opened a "
        "trade, what b hold(s) is unknown (listed above)",
    )
    # an unreadable journal is unknown whatever on_stop says
    assert verdict([Leftover("k", KEEP, error="locked")])[0] == 1
    assert verdict([Leftover("a", CLOSE, (TRADE,))]) == (
        1,
        "stopped; exit status 1: 1 trade(s) left open (listed above)",
    )


def test_what_no_journal_tells_is_named_after_what_is_held() -> None:
    left = [Leftover("a", CLOSE, (TRADE,))]
    assert verdict(left, ["FATAL: x (see above)", "the simulator exited unexpectedly"]) == (
        1,
        "stopped; exit status 1: 1 trade(s) left open (listed above); FATAL: x (see above); "
        "the simulator exited unexpectedly",
    )
    assert verdict([], ["FATAL: x (see above)"]) == (
        1,
        "stopped; exit status 1: FATAL: x (see above)",
    )


def test_the_accounts_that_needed_a_sweep_in_one_line() -> None:
    assert swept({}) is None
    assert swept({"a": "killed at stop_timeout (30 s)", "b": "its worker: exit 3"}) == (
        "2 account(s) needed a sweep: a (killed at stop_timeout (30 s)), b (its worker: exit 3)"
    )
    many = {f"c{n}": "its worker: exit 3" for n in range(12)}
    line = swept(many, most=2)
    assert line == (
        "12 account(s) needed a sweep: c0 (its worker: exit 3), c1 (its worker: exit 3) "
        "and 10 more (see above)"
    )
