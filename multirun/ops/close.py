"""`multirun close`: close what an account's journal holds, loading no strategy code.

For an account renamed or removed from the config while its journal still holds open
trades (``multirun start`` and ``validate`` name such journals, see
:func:`multirun.account.ownership.orphan_journals`), and for a configured account whose trades
should be closed now. Each NAME's journal is reconciled with the server, then every
trade of ours it holds (its orderRef prefix ``mr-NAME-``) is closed and the close
confirmed through the server's listings: :func:`multirun.account.process.run_sweep`,
with ``on_stop: close`` whatever the config says.

Credentials: a configured NAME uses its own. A NAME no longer in the config borrows
those of the configured account trading the same server account (server, user, runmode,
accountid), which the journal records; ``--as OTHER`` names that account explicitly
(needed for a journal written before multirun recorded its account), and is refused
when the journal records a different server account.

Beside a running supervisor: with ``server: sim`` the URL of its simulator is read from
``supervisor.json`` (``announced``). Like any trader, a close takes the account lock;
when the holder is another account of this same config (a renamed account's successor,
trading the same server account), the close goes on beside it: each touches only the
trades of its own orderRef prefix (``mr-NAME-``), and NAME's journal is locked. NAME's own
running worker must be stopped first (``multirun stop CONFIG NAME``). Each close is
priced from the server's history, and NAME's status.json shows what is left.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from multirun.account import ownership
from multirun.account.journal.schema import CorruptJournal
from multirun.account.journal.store import Journal
from multirun.account.ownership import AccountInUse, AccountLock, same_binding
from multirun.account.process import identity, run_sweep
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.errors import EXIT_OK, UsageError
from multirun.core.locks import read_holder
from multirun.core.statedir import StateDir
from multirun.ops import locate


def close_accounts(
    runner: RunnerSpec,
    names: Sequence[str],
    *,
    borrow: str | None = None,
    server_url: str | None = None,
    timeout_s: float | None = None,
) -> int:
    """Close what each NAME's journal holds; the worst exit status (0: all closed)."""
    if not names:
        raise UsageError("close: name at least one account (its state_dir sub-directory)")
    url = server_url or server_of(runner)
    plans = [(name, credentials_for(runner, name, borrow)) for name in names]
    worst = EXIT_OK
    for name, spec in plans:
        single = dataclasses.replace(runner, accounts=(spec,))
        code = run_sweep(
            single, name, server_url=url, deadline_s=timeout_s or runner.stop_timeout_s,
            lock=functools.partial(account_lock, runner, spec, url),
        )  # fmt: skip
        if code == EXIT_OK:
            print(f"{name}: nothing of ours left open (confirmed by the server)", flush=True)
        worst = max(worst, code)
    return worst


def server_of(runner: RunnerSpec) -> str:
    """The server to close on: the file's, or for ``server: sim`` the simulator of the
    supervisor running on the state dir (as its ``supervisor.json`` announces it)."""
    if not runner.uses_sim:
        return runner.server
    found = locate.running(runner.state_dir)
    url = found.data.get("announced", {}).get("sim") if found else None
    if not url:
        raise UsageError(
            f"{runner.path}: server: sim: no supervisor runs on {runner.state_dir}, so no "
            "simulator either: start it (multirun start), or pass --server URL of a simulator"
        )
    print(f"server: sim: the running supervisor's simulator, {url}", file=sys.stderr, flush=True)
    return str(url)


def account_lock(runner: RunnerSpec, spec: AccountSpec, url: str) -> AccountLock | None:
    """The account lock for closing ``spec.name``'s journal, or None when another account
    of this config holds it (the same server account under another orderRef prefix: the
    close goes on beside it, said on stderr). NAME's own worker holding it: refused."""
    try:
        return ownership.lock_account(
            url, spec.user, spec.runmode, spec.accountid, config=runner.path, name=spec.name
        )
    except AccountInUse:
        holder = _holder_of(url, spec)
        other = holder.get("account")
        ours = isinstance(holder.get("config"), str) and locate.same_file(
            str(holder["config"]), runner.path
        )
        if not ours or not isinstance(other, str):
            raise
        if other == spec.name:
            raise AccountInUse(
                f"account {spec.name} is running (pid {holder.get('pid')}): `multirun flatten "
                f"{runner.path} {spec.name}` closes its trades and keeps it paused; or stop it "
                f"first (multirun stop {runner.path} {spec.name}: its on_stop applies), then close"
            ) from None
        print(
            f"{spec.name}: closing beside account {other!r} (pid {holder.get('pid')}), which "
            f"trades the same server account: each touches only its own orderRefs "
            f"(mr-{spec.name}-... here)", file=sys.stderr, flush=True,
        )  # fmt: skip
        return None


def _holder_of(url: str, spec: AccountSpec) -> dict[str, object]:
    """The record in the account lock's file of ``spec``'s server account ({} unreadable)."""
    path = ownership.lock_path(url, spec.user, spec.runmode, spec.accountid)
    try:
        record = json.loads(read_holder(path) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def credentials_for(runner: RunnerSpec, name: str, borrow: str | None) -> AccountSpec:
    """The spec to close ``name``'s journal with (see the module docstring)."""
    account = StateDir(runner.state_dir).account(name)
    if not account.journal.exists():
        known = ", ".join(StateDir(runner.state_dir).account_names()) or "none"
        raise UsageError(f"no journal for {name!r} in {runner.state_dir} (journals: {known})")
    recorded = _recorded_identity(account.journal, name)
    if borrow is not None:
        base = _configured(runner, borrow)
        if recorded is not None and recorded != identity(runner, base):
            raise UsageError(
                f"journal {name!r} traded {_what(recorded)}, but account {borrow!r} trades "
                f"{_what(identity(runner, base))}: refusing to close with the wrong credentials"
            )
    elif any(a.name == name for a in runner.accounts) and (
        recorded is None or same_binding(recorded, identity(runner, runner.account(name)))
    ):
        base = runner.account(name)
    elif recorded is None:
        raise UsageError(
            f"journal {name!r} does not record its server account (written by an older "
            "multirun): name the configured account whose credentials to use with --as NAME"
        )
    else:
        same = [a for a in runner.accounts if same_binding(recorded, identity(runner, a))]
        if not same:
            raise UsageError(
                f"no account in {runner.path} trades {_what(recorded)}, which journal "
                f"{name!r} traded: add one, or name one with --as NAME"
            )
        base = same[0]
        if base.name != name:
            print(f"{name}: using the credentials of {base.name!r} ({_what(recorded)})",
                  file=sys.stderr, flush=True)  # fmt: skip
    return dataclasses.replace(base, name=name, on_stop="close", enabled=True)


def _recorded_identity(path: Path, name: str) -> dict[str, str] | None:
    """The server account the journal at ``path`` records; None for a damaged journal
    (said on stderr: the close sets it aside and rebuilds it from the server)."""
    try:
        journal = Journal(path, f"mr-{name}-")
    except CorruptJournal as exc:
        print(f"{name}: {exc}: it is set aside and rebuilt from the server's listings",
              file=sys.stderr, flush=True)  # fmt: skip
        return None
    try:
        return journal.identity()
    finally:
        journal.close()


def _configured(runner: RunnerSpec, name: str) -> AccountSpec:
    try:
        return runner.account(name)
    except KeyError:
        known = ", ".join(a.name for a in runner.accounts) or "none"
        raise UsageError(
            f"--as {name}: no such account in {runner.path} (accounts: {known})"
        ) from None


def _what(ident: dict[str, str]) -> str:
    return f"{ident.get('user')}/{ident.get('runmode')}/{ident.get('accountid')}"


def split_args(args: Sequence[str]) -> tuple[Path, list[str]]:
    """``[CONFIG] NAME...``: a first argument naming a YAML file (or an existing file) is
    the config; otherwise the config is ``runner.yaml``."""
    if args and (args[0].endswith((".yaml", ".yml")) or Path(args[0]).is_file()):
        return Path(args[0]), list(args[1:])
    return Path("runner.yaml"), list(args)
