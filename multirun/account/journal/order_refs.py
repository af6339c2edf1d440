"""orderRefs of one account's journal: ``<prefix><EPOCH>-<n>``, and the counter ``n``.

``EPOCH`` is six upper-case letters drawn when the journal is created (account names are
lower-case, so no other account's prefix can read it as ours); ``n`` is kept in the
journal's ``meta`` table (``next_seq``) and bumped above any suffix seen on the server.
``<prefix><n>`` refs (journals older than the epoch) stay ours. See
:mod:`multirun.account.journal.store`.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import string

# After the prefix: an optional epoch (upper-case: never part of an account name), then
# the counter. ASCII only: str.isdigit() accepts "²", int() does not.
SUFFIX = re.compile(r"(?:([A-Z]{4,12})-)?([0-9]+)")
EPOCH_LEN = 6


def draw_epoch() -> str:
    """A new journal's epoch: six random upper-case letters."""
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(EPOCH_LEN))


def match(prefix: str, order_ref: str) -> re.Match[str] | None:
    """``order_ref`` split after ``prefix`` into (epoch or None, counter); None if not ours.

    The prefix alone is not enough: account ``coin``'s ``mr-coin-`` is also the start of
    every orderRef of an account named ``coin-btc``.
    """
    if not order_ref.startswith(prefix):
        return None
    return SUFFIX.fullmatch(order_ref.removeprefix(prefix))


def next_seq(db: sqlite3.Connection) -> int:
    """Take the journal's next counter (within the caller's transaction)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    seq = int(row[0]) if row else 1
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seq + 1,))
    return seq


def bump_seq(db: sqlite3.Connection, seen: int | None) -> None:
    """Make the next counter exceed ``seen`` (within the caller's transaction)."""
    if seen is None:
        return
    row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    if not row or int(row[0]) <= seen:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seen + 1,))
