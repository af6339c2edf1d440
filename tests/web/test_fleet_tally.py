"""The dashboard's orders-today count, read after read: each order counted once."""

from __future__ import annotations

from multirun.account.journal.reader import Created
from multirun.web.fleet import _Tally

DAY = 86400.0 * 20000


def trade(ref: str, created: float) -> Created:
    return Created(ref, created)


def test_each_order_of_today_counts_once_across_overlapping_reads() -> None:
    tally = _Tally(DAY, DAY)
    yesterday_held = trade("r0", DAY - 50)  # created before today: never counted
    first = [yesterday_held, trade("r1", DAY + 10), trade("r2", DAY + 100)]
    assert tally.add(first, DAY + 60) == 2  # next read from 60 s before the last one's time
    second = [yesterday_held, trade("r1", DAY + 10), trade("r2", DAY + 100), trade("r3", DAY + 130)]
    assert tally.add(second[2:], DAY + 120) == 3  # r2 read again: not counted again
    assert (
        tally.add([yesterday_held, trade("r3", DAY + 130), trade("r4", DAY + 200)], DAY + 190) == 4
    )
    assert set(tally.recent) == {"r4"}  # what the next read may return again, no more
