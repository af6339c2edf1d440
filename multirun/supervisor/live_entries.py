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

from collections.abc import Mapping
from typing import Any

from multirun.core import statefiles
from multirun.core.errors import SupervisorError
from multirun.core.statedir import StateDir
from multirun.supervisor.control_server import exchange

ASK_TIMEOUT_S = 1.0  # the notifier looks once a second: an answer later than that is stale


class Entries:
    """Each account's process entry, from the supervisor's memory if it answers in time,
    else from ``supervisor.json``. Asked once a second, the supervisor answers
    "unchanged" (a few bytes, not every account's entry) while nothing was saved since
    the reply kept here (its ``generation``)."""

    def __init__(self, layout: StateDir, timeout_s: float = ASK_TIMEOUT_S) -> None:
        self.layout = layout
        self.timeout_s = timeout_s
        self.kept: tuple[str, Mapping[str, statefiles.ProcessEntry]] | None = None

    def __call__(self) -> Mapping[str, statefiles.ProcessEntry]:
        payload: dict[str, Any] = {"cmd": "status"}
        if self.kept is not None:
            payload["unless"] = self.kept[0]
        reply = ask(self.layout, payload, self.timeout_s)
        self.kept, kept = None, self.kept
        if not reply or not reply.get("ok"):
            return statefiles.supervised(self.layout)
        if reply.get("unchanged") and kept is not None and reply.get("generation") == kept[0]:
            self.kept = kept
            return kept[1]
        accounts = reply.get("accounts")
        if not isinstance(accounts, dict):
            return statefiles.supervised(self.layout)
        if isinstance(reply.get("generation"), str):
            self.kept = (reply["generation"], accounts)
        return accounts


def ask(layout: StateDir, payload: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
    """One request on the control socket; its reply, or None (no answer in time)."""
    try:
        return exchange(layout.control_socket, payload, timeout_s)
    except (SupervisorError, OSError):
        return None
