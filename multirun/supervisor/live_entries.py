"""The notifier's view of the accounts: the supervisor's own memory, not only its file.

On a full disk (issue 23, case 3) no file can be written: ``supervisor.json`` and every
``status.json`` keep saying RUNNING while a worker, told on its pipe, is HALTED. The
notifier, a child of the supervisor, asks the supervisor over its control socket (the
``status`` request ``multirun status`` makes, on one connection kept open) each time it
looks, and reads ``supervisor.json`` only when the socket does not answer (a stopping
supervisor, an older one). The reply's accounts have the file's shape (:class:`ProcessEntry`), with
``worker_state`` and ``worker_reason`` from the pipes; its ``risk`` (the file-level
limit's sums and breach, live even in an "unchanged" reply) is the file's too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from multirun.core import statefiles
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.supervisor.control_server import KeptConnection, StatusReplies

ASK_TIMEOUT_S = 1.0  # the notifier looks once a second: an answer later than that is stale


class Entries:
    """Each account's process entry, from the supervisor's memory if it answers in time,
    else from ``supervisor.json``. Asked once a second, the supervisor answers
    "unchanged" (its time and the file-level sums, not every account's entry) while
    nothing was saved since the reply kept here
    (:class:`~multirun.supervisor.control_server.StatusReplies`)."""

    def __init__(
        self,
        layout: StateDir,
        timeout_s: float = ASK_TIMEOUT_S,
        ask: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """``ask``: one request, its reply (by default over ``layout``'s control socket)."""
        self.layout = layout
        self.replies = StatusReplies(ask or KeptConnection(layout.control_socket, timeout_s))
        self.seen: Mapping[str, Any] = {}  # what the last call read: the reply, or the file

    def __call__(self) -> Mapping[str, statefiles.ProcessEntry]:
        try:
            reply = self.replies()
        except (SupervisorError, OSError):
            reply = {}
        if reply.get("ok") and isinstance(reply.get("accounts"), dict):
            self.seen = reply
        else:
            self.seen = statefiles.read_supervisor(self.layout)
        return self.seen.get("accounts") or {}

    def risk(self) -> Mapping[str, Any]:
        """The file-level limit's state (``risk``; {} when none) where the last call read
        the entries: the notifier's ``risk_breach`` without parsing ``supervisor.json``
        again, and right on a full disk."""
        return self.seen.get("risk") or {}
