"""The state directory's layout: the one place that knows what file lives where.

::

    state_dir/                   0700
      supervisor.pid             the running supervisor's pid, flock-held while it runs
      supervisor.json            the supervisor's view of every account (``status`` reads it)
      supervisor.log             the supervisor's events and the simulator's lines
      control.sock               the running supervisor's control socket (0600)
      .tokens/                   0700: session tokens shared by the processes of one user
        <hash>.json              one (server, user)'s current token (0600, a secret), and
        <hash>.lock              the flock taken to renew it (see multirun.api.tokens)
      <account>/                 0700, one per account
        journal.sqlite           the account's order journal (WAL mode)
        worker.lock              flock-held by the one process trading the account
        status.json              the worker's own view: ticks, trades, token, errors
        .status.json.a, .b       its two inodes, written in turn (procutil.RewrittenJson)
        metrics.bin              the worker's counters and histograms (with `metrics:`),
                                 updated in place through a mapping (core.slotfile)
        worker.log               the account's log lines (rotated by size)
        heartbeat                touched by the worker's main thread while it is alive and
                                 responsive; its mtime is what the supervisor's watchdog reads
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

SUPERVISOR_PID = "supervisor.pid"
SUPERVISOR_JSON = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"
CONTROL_SOCKET = "control.sock"
JOURNAL = "journal.sqlite"
WORKER_LOCK = "worker.lock"
WORKER_STATUS = "status.json"
WORKER_METRICS = "metrics.bin"
WORKER_LOG = "worker.log"
HEARTBEAT = "heartbeat"
# What an older version's worker kept in its directory and this one does not: its
# counters as JSON, rewritten every tick (now metrics.bin).
RETIRED = ("metrics.json", ".metrics.json.a", ".metrics.json.b")
TOKENS = ".tokens"


@dataclass(frozen=True)
class AccountDir:
    """One account's directory and the files in it."""

    path: Path

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def lock(self) -> Path:
        return self.path / WORKER_LOCK

    @property
    def status(self) -> Path:
        return self.path / WORKER_STATUS

    @property
    def metrics(self) -> Path:
        return self.path / WORKER_METRICS

    @property
    def log(self) -> Path:
        return self.path / WORKER_LOG

    @property
    def heartbeat(self) -> Path:
        return self.path / HEARTBEAT

    @property
    def retired(self) -> tuple[Path, ...]:
        """Files an older version left here that nothing reads any more."""
        return tuple(self.path / name for name in RETIRED)


@dataclass(frozen=True)
class StateDir:
    """A ``state_dir`` and the files in it; see the module docstring for the tree."""

    path: Path

    @property
    def supervisor_pid(self) -> Path:
        return self.path / SUPERVISOR_PID

    @property
    def supervisor_json(self) -> Path:
        return self.path / SUPERVISOR_JSON

    @property
    def supervisor_log(self) -> Path:
        return self.path / SUPERVISOR_LOG

    @property
    def control_socket(self) -> Path:
        return self.path / CONTROL_SOCKET

    def token_file(self, server: str, user: str) -> Path:
        """Where the processes of ``user`` on ``server`` share their session token."""
        digest = hashlib.sha256(f"{server}\0{user}".encode()).hexdigest()[:24]
        return self.path / TOKENS / f"{digest}.json"

    def account(self, name: str) -> AccountDir:
        return AccountDir(self.path / name)

    def account_names(self) -> list[str]:
        """Names of the account directories present (those holding a journal)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if (p / JOURNAL).exists())
