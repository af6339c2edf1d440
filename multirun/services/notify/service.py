"""The notifier's process (a supervised service child), and ``multirun notify-test``.

The notifier starts before the accounts and stops after them: the arbiter sends its
services SIGTERM only once no worker and no sweep runs (:mod:`multirun.supervisor.arbiter`). On
SIGTERM it polls once more, reads the journals for what the stop left open (as the final
report will), and gives its queues :data:`FINAL_DEADLINE_S` to empty (within the
service's stop timeout). It never fails the run: a problem is logged and it goes on.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from multirun.config.specs import AccountSpec, RunnerSpec
from multirun.core import statefiles
from multirun.core.errors import MultirunError
from multirun.core.redact import mask_url
from multirun.core.statedir import StateDir
from multirun.services.notify import deliver
from multirun.services.notify.events import Event, Watcher, left_open

log = logging.getLogger("multirun.notify")

POLL_S = 1.0
FINAL_DEADLINE_S = 3.0  # under the service stop timeout (programs.SERVICE_STOP_TIMEOUT_S)


def secrets_of(runner: RunnerSpec) -> list[str]:
    return [a.api_key.reveal() for a in runner.accounts if a.api_key]


def serve(
    runner: RunnerSpec,
    names: Sequence[str],
    *,
    poll_s: float = POLL_S,
    processes: statefiles.ProcessEntries | None = None,
    risk: Callable[[], Mapping[str, Any]] | None = None,
) -> int:
    """Watch the state dir until SIGTERM, sending what it finds; then the last messages.
    ``processes``: each account's process entry, ``risk``: the file-level limit's state
    (the supervisor's memory, its ``risk`` looked at after ``processes``; by default
    ``supervisor.json``'s)."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    layout = StateDir(runner.state_dir)
    watcher = Watcher(layout, names, processes=processes, risk=risk)
    deliverer = deliver.Deliverer.for_targets(
        runner.notify, secrets_of(runner), config=str(runner.path)
    )
    mask = deliverer.senders[0].mask if deliverer.senders else str
    shown = ", ".join(s.shown for s in deliverer.senders)
    log.info("notify: watching %d account(s) for %s", len(names), shown)

    def guarded(step: Callable[[], list[Event]]) -> None:
        try:
            for event in step():
                deliverer.put(event)
        except Exception as exc:  # the notifier never ends the run
            log.warning("notify: %s", mask(f"{type(exc).__name__}: {exc}"))

    while True:
        guarded(watcher.poll)
        if stop.wait(poll_s):
            break
    guarded(watcher.poll)
    accounts = watched_specs(runner, watcher.names)
    guarded(lambda: [e for e in [left_open(layout, accounts)] if e is not None])
    if not deliverer.close(FINAL_DEADLINE_S):
        log.warning("notify: stopped with messages not sent (deadline %g s)", FINAL_DEADLINE_S)
    return 0


def watched_specs(runner: RunnerSpec, names: Sequence[str]) -> list[AccountSpec]:
    """The specs of the accounts watched: the start's, and for the accounts a reload added
    (not in it), the file's as it is now (re-read once, at the stop)."""
    known = {a.name: a for a in runner.accounts}
    if any(name not in known for name in names):
        from multirun.config import loader

        try:
            known = {a.name: a for a in loader.load(runner.path).accounts} | known
        except MultirunError as exc:
            log.warning("notify: %s not re-read for the accounts a reload added: %s",
                        runner.path, exc)  # fmt: skip
    return [known[name] for name in names if name in known]


def notify_test(runner: RunnerSpec, *, echo: Callable[[str], None] = print) -> int:
    """Send one test message to each target, synchronously; 0 when every one took it."""
    if not runner.notify:
        echo(f"no notify targets in {runner.path}")
        return 1
    from multirun.services.notify import formats

    mask = deliver.redactor_for(runner.notify, secrets_of(runner))
    text = f"test message from multirun ({runner.path.name}): alerts reach this target"
    failed = 0
    for target in runner.notify:
        event = Event("test", text)
        payload = formats.body(
            target.format, event, mask, url=target.url.reveal(), config=str(runner.path)
        )
        why = deliver.post(target, payload, deliver.TIMEOUT_S)
        shown = mask_url(target.url.reveal())
        echo(f"{shown} ({target.format}): {'ok' if not why else 'failed: ' + why}")
        failed += bool(why)
    return 1 if failed else 0
