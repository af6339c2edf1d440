"""Who may log in: everyone (the default), or the users of an accounts file.

Accounts file (YAML or JSON)::

    users:
      - user: alice              # ALGOGENE user id
        api_key: "alice-key"     # the only key accepted for alice
        balance: 100000          # optional starting cash of each account (USD)
        accounts:                # account ids per runmode
          livetest: ["A-1", "A-2"]
          livetrade: ["L-1"]

With a file, any other user, key, runmode or account id is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUNMODES = ("livetest", "livetrade")


@dataclass(frozen=True)
class UserEntry:
    api_key: str
    accounts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    balance: float | None = None


class Directory:
    """Answers 'may this user, key, runmode, account be used?'."""

    def __init__(self, users: Mapping[str, UserEntry] | None = None) -> None:
        self._users = dict(users) if users is not None else None

    @property
    def restricted(self) -> bool:
        return self._users is not None

    def key_ok(self, user: str, api_key: str) -> bool:
        if self._users is None:
            return bool(user) and bool(api_key)
        entry = self._users.get(user)
        return entry is not None and entry.api_key == api_key

    def account_ok(self, user: str, runmode: str, accountid: str) -> bool:
        if self._users is None:
            return True
        entry = self._users.get(user)
        return entry is not None and accountid in entry.accounts.get(runmode, ())

    def listed(self, user: str, runmode: str) -> tuple[str, ...]:
        """Account ids the file lists for ``user`` in ``runmode`` (none when open)."""
        if self._users is None or user not in self._users:
            return ()
        return self._users[user].accounts.get(runmode, ())

    def balance(self, user: str) -> float | None:
        if self._users is None or user not in self._users:
            return None
        return self._users[user].balance


def load_directory(path: Path | None, data: Mapping[str, Any] | None = None) -> Directory:
    """The directory of ``path`` (or of already-parsed ``data``); open if neither."""
    if path is None and data is None:
        return Directory()
    if data is None:
        assert path is not None
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"cannot read accounts file {path}: {error.strerror}") from None
        except yaml.YAMLError:
            raise ValueError(f"accounts file {path} is not valid YAML or JSON") from None
    return Directory(_parse(data, str(path or "accounts")))


def _parse(data: Any, where: str) -> dict[str, UserEntry]:
    if not isinstance(data, Mapping) or not isinstance(data.get("users"), list):
        raise ValueError(f"{where}: expected a mapping with a 'users' list")
    users: dict[str, UserEntry] = {}
    for index, item in enumerate(data["users"]):
        name, entry = _parse_user(item, f"{where}: users[{index}]")
        if name in users:
            raise ValueError(f"{where}: user {name!r} listed twice")
        users[name] = entry
    return users


def _parse_user(item: Any, where: str) -> tuple[str, UserEntry]:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    user, key = item.get("user"), item.get("api_key")
    if not isinstance(user, str | int) or not str(user):
        raise ValueError(f"{where}: 'user' must be a non-empty string")
    if not isinstance(key, str | int) or not str(key):
        raise ValueError(f"{where}: 'api_key' must be a non-empty string")
    raw_accounts = item.get("accounts") or {}
    if not isinstance(raw_accounts, Mapping):
        raise ValueError(f"{where}: 'accounts' must map runmode to a list of account ids")
    accounts: dict[str, tuple[str, ...]] = {}
    for runmode, ids in raw_accounts.items():
        if runmode not in RUNMODES:
            raise ValueError(f"{where}: unknown runmode {runmode!r} (livetest or livetrade)")
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise ValueError(f"{where}: accounts.{runmode} must be a list of account ids")
        accounts[runmode] = tuple(str(i) for i in ids)
    balance = item.get("balance")
    if balance is not None and (isinstance(balance, bool) or not isinstance(balance, int | float)):
        raise ValueError(f"{where}: 'balance' must be a number")
    return str(user), UserEntry(str(key), accounts, None if balance is None else float(balance))
