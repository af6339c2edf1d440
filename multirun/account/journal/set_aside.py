"""Setting aside a damaged journal: kept, renamed, reported, never deleted.

A journal SQLite calls damaged (:class:`~multirun.account.journal.schema.CorruptJournal`)
cannot say what is open, and refusing to start leaves the account's trades open and
unnamed. Its holder (the worker, a sweep, ``multirun close``: whoever holds the journal's
lock) renames ``journal.sqlite`` and its ``-wal``/``-shm`` to
``journal.corrupt-<UTC time>.sqlite`` beside it (0600, for a person to examine), then
opens a new journal: the start-up reconciliation adopts every trade the server lists
under the account's prefix (any epoch), so ``on_stop`` and ``close`` act on them and name
them. The new journal records :class:`Rebuilt` in its ``meta`` table, which ``status``
and ``validate --online`` show.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from multirun.account.journal.schema import damaged
from multirun.core.clock import iso_ms

log = logging.getLogger("multirun.journal")

META_KEY = "rebuilt"
_SIDECARS = ("", "-wal", "-shm")  # the database, its write-ahead log, its shared memory


@dataclass(frozen=True)
class Rebuilt:
    """A journal was set aside as damaged and this one rebuilt from the server."""

    at_utc: str
    kept_as: str  # the damaged file, renamed
    reason: str  # SQLite's word for the damage

    def line(self) -> str:
        return (
            f"journal rebuilt from the server at {self.at_utc}: the damaged one "
            f"({self.reason}) is kept as {self.kept_as}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rebuilt | None:
        try:
            value = json.loads(text)
            return cls(str(value["at_utc"]), str(value["kept_as"]), str(value["reason"]))
        except (ValueError, TypeError, KeyError):
            return None


def set_aside(path: Path, reason: str, now: float | None = None) -> Rebuilt:
    """Rename the damaged journal at ``path`` (with its -wal and -shm) beside it; OSError
    if it cannot be (then nothing may open a new journal in its place)."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    kept = _free_name(path, stamp)
    for suffix in _SIDECARS:
        source = Path(f"{path}{suffix}")
        if source.exists():
            target = Path(f"{kept}{suffix}")
            os.rename(source, target)
            os.chmod(target, 0o600)
    log.error("journal %s is damaged (%s): set aside as %s; rebuilding it from the server",
              path, reason, kept)  # fmt: skip
    return Rebuilt(at_utc=iso_ms(now) or "", kept_as=str(kept), reason=reason)


def _free_name(path: Path, stamp: str) -> Path:
    """``journal.corrupt-<stamp>.sqlite`` beside ``path``, numbered if already taken."""
    stem, suffix = path.stem, path.suffix
    kept = path.with_name(f"{stem}.corrupt-{stamp}{suffix}")
    n = 1
    while any(Path(f"{kept}{s}").exists() for s in _SIDECARS):
        n += 1
        kept = path.with_name(f"{stem}.corrupt-{stamp}-{n}{suffix}")
    return kept


def examine(path: Path, name: str) -> str | None:
    """What ``validate --online`` says of account ``name``'s journal at ``path``, read-only:
    damaged now, or rebuilt (when, and where the damaged one is kept); None: neither."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=5.0)
        try:
            found = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
            row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if not damaged(exc):
            return None  # busy, or older than the meta table: nothing to say of damage
        found, row = [str(exc)], None
    if found != ["ok"]:
        return (
            f"journal {path} is damaged ({found[0]}): the next start or `multirun close "
            f"{name}` sets it aside and rebuilds it from the server"
        )
    rebuilt = Rebuilt.from_json(str(row[0])) if row else None
    return rebuilt.line() if rebuilt else None
