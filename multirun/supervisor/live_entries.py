"""The notifier's view of the accounts: the supervisor's own memory, not only its file.

On a full disk (issue 23, case 3) no file can be written: ``supervisor.json`` and every
``status.json`` keep saying RUNNING while a worker, told on its pipe, is HALTED. The
notifier, a child of the supervisor, asks the supervisor over its control socket (the
``status`` request ``multirun status`` makes) each time it looks, and reads
``supervisor.json`` only when the socket does not answer (a stopping supervisor, an
older one). The reply's accounts have the file's shape (:class:`ProcessEntry`), with
``worker_state`` and ``worker_reason`` from the pipes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from multirun.core import statefiles
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.supervisor.control_server import StatusReplies, exchange

ASK_TIMEOUT_S = 1.0  # the notifier looks once a second: an answer later than that is stale


class Entries:
    """Each account's process entry, from the supervisor's memory if it answers in time,
    else from ``supervisor.json``. Asked once a second, the supervisor answers
    "unchanged" (its time and the file-level sums, not every account's entry) while
    nothing was saved since the reply kept here
    (:class:`~multirun.supervisor.control_server.StatusReplies`)."""

    def __init__(self, layout: StateDir, timeout_s: float = ASK_TIMEOUT_S) -> None:
        self.layout = layout
        self.replies = StatusReplies(functools.partial(exchange, layout.control_socket,
                                                       timeout_s=timeout_s))  # fmt: skip

    def __call__(self) -> Mapping[str, statefiles.ProcessEntry]:
        try:
            reply = self.replies()
        except (SupervisorError, OSError):
            reply = {}
        accounts = reply.get("accounts") if reply.get("ok") else None
        if isinstance(accounts, dict):
            return accounts
        return statefiles.supervised(self.layout)
