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
when the journal records a different server account. Like any trader, it takes the
account lock: while a supervisor runs that server account, stop it first.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from multirun.account.journal.schema import CorruptJournal
from multirun.account.journal.store import Journal
from multirun.account.ownership import same_binding
from multirun.account.process import identity, run_sweep
from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core.errors import EXIT_OK, UsageError
from multirun.core.statedir import StateDir


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
    url = server_url or runner.server
    if runner.uses_sim and server_url is None:
        raise UsageError(f"{runner.path}: server: sim: pass --server URL of the simulator")
    plans = [(name, credentials_for(runner, name, borrow)) for name in names]
    worst = EXIT_OK
    for name, spec in plans:
        single = dataclasses.replace(runner, accounts=(spec,))
        code = run_sweep(
            single, name, server_url=url, deadline_s=timeout_s or runner.stop_timeout_s
        )
        if code == EXIT_OK:
            print(f"{name}: nothing of ours left open (confirmed by the server)", flush=True)
        worst = max(worst, code)
    return worst


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
