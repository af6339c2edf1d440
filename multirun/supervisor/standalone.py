"""One account under an outside engine (systemd, Kubernetes, Compose): ``multirun run-account``.

The engine is the supervisor there: it starts, restarts and stops the process. What the
supervisor's service children do for its accounts, this process does for its own one,
beside the worker, never in its way:

- ``metrics:``: ``/metrics`` (:class:`multirun.services.metrics.StateDirPage`, in a
  thread) on :func:`metrics_address`: the configured port plus the account's position in
  ``accounts:``, so the units of one config on one host never collide; ``--metrics-listen``
  overrides it (a container: ``0.0.0.0:PORT``, the same in every pod);
- ``notify:``: this account's alerts (:class:`multirun.services.notify.events.Watcher`,
  polled every second in a thread); at the end what the journal left open, and FATAL when
  the worker exits so (``systemd`` does not restart it);
- systemd (``Type=notify``): ``READY=1`` once the account is up, ``WATCHDOG=1`` at each of
  its heartbeats (:mod:`multirun.core.sdnotify`).

The collector and the watcher read the state directory as a supervisor's children do,
but take the account's process entry (its state, its pid) from this process, not from a
``supervisor.json``: there is no supervisor, and N units may share one state directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

from multirun.account import process as account_process
from multirun.account.process import ServerStarter
from multirun.config.specs import MetricsSpec, RunnerSpec, split_listen
from multirun.core import statefiles
from multirun.core.errors import EXIT_FATAL, FatalError, UsageError
from multirun.core.sdnotify import SdNotify
from multirun.core.statedir import StateDir
from multirun.core.states import State
from multirun.services.notify.events import Event

__all__ = ["metrics_address", "run"]


def run(
    runner: RunnerSpec,
    name: str,
    *,
    server_url: str | None = None,
    start_server: ServerStarter | None = None,
    metrics_listen: str | None = None,
    notifier: SdNotify | None = None,
) -> int:
    """Run account ``name`` of ``runner`` (:func:`multirun.account.process.run_account`)
    with the services its ``metrics:`` and ``notify:`` ask for; returns its exit code."""
    if name not in {a.name for a in runner.accounts}:  # run_account says so, with the list
        return account_process.run_account(runner, name, server_url=server_url)
    sd = notifier or SdNotify.from_environ(extend_s=runner.watchdog_timeout_s)
    with _Services(runner, name, metrics_address(runner, name, metrics_listen)) as services:

        def up() -> None:
            services.up()
            sd.ready(f"account {name} running")

        try:
            code = account_process.run_account(
                runner, name, server_url=server_url, start_server=start_server,
                on_up=up, on_beat=sd.beat,
            )  # fmt: skip
        except FatalError as exc:
            services.fatal(str(exc))
            raise
        sd.stopping()
        return code


def metrics_address(runner: RunnerSpec, name: str, listen: str | None) -> MetricsSpec | None:
    """Where account ``name`` serves ``/metrics``: ``listen`` when given (any address:
    asking is the consent ``allow_remote`` gives); else the configured host and port plus
    the account's 0-based position in ``accounts:`` (port 0: any free port). None
    without ``metrics:`` and ``listen``."""
    if listen is not None:
        try:
            host, port = split_listen(listen)
        except ValueError as error:
            raise UsageError(f"--metrics-listen {listen!r}: {error}") from None
        return MetricsSpec(host, port, allow_remote=True)
    if runner.metrics is None:
        return None
    spec = runner.metrics
    position = [a.name for a in runner.accounts].index(name)
    return replace(spec, port=spec.port + position) if spec.port else spec


class _Services:
    """The metrics server and the alerts thread of one account, and the process entry
    they read of it (see the module docstring)."""

    def __init__(self, runner: RunnerSpec, name: str, metrics: MetricsSpec | None) -> None:
        self.runner = runner
        self.name = name
        self.metrics = metrics
        self.stack = contextlib.ExitStack()
        self.layout = StateDir(runner.state_dir)
        self.entry: statefiles.ProcessEntry = _entry(State.STARTING)
        self.alerts: _Alerts | None = None

    def processes(self) -> Mapping[str, statefiles.ProcessEntry]:
        return {self.name: self.entry}

    def __enter__(self) -> _Services:
        if self.metrics is None and not self.runner.notify:
            return self
        with contextlib.ExitStack() as stack:
            if self.metrics is not None:
                stack.enter_context(_metrics_server(self.metrics, self.layout, self.processes))
            if self.runner.notify:
                alerts = _Alerts(self.runner, self.name, self.layout, self.processes)
                self.alerts = stack.enter_context(alerts)
            self.stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def up(self) -> None:
        self.entry = _entry(State.RUNNING)

    def fatal(self, why: str) -> None:
        if self.alerts is not None:
            self.alerts.fatal(why)


def _entry(state: State) -> statefiles.ProcessEntry:
    """This process as a supervisor would describe it (no restarts: the engine counts)."""
    return {"state": state, "pid": os.getpid(), "restarts": 0}


@contextlib.contextmanager
def _metrics_server(
    spec: MetricsSpec, layout: StateDir, processes: statefiles.ProcessEntries
) -> Iterator[None]:
    """``/metrics`` in a thread; a port that cannot be bound is said, and trading goes on
    (Prometheus then shows the target down: ``up == 0``)."""
    from multirun.services.exposition import start_server
    from multirun.services.metrics import StateDirPage

    page = StateDirPage(layout.path, processes=processes)
    try:
        server, thread = start_server(spec.host, spec.port, page.render)
    except OSError as exc:
        _say(f"warning: cannot serve /metrics on {spec.host}:{spec.port}: {exc}")
        yield
        return
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else str(host)
    _say(f"serving /metrics on http://{f'[{host}]' if ':' in host else host}:{port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Alerts:
    """This account's ``notify:`` events, polled every second in a thread."""

    def __init__(
        self, runner: RunnerSpec, name: str, layout: StateDir, processes: statefiles.ProcessEntries
    ) -> None:
        from multirun.services.notify import deliver, service
        from multirun.services.notify.events import Watcher

        self.runner = runner
        self.name = name
        self.layout = layout
        self.watcher = Watcher(layout, [name], processes=processes)
        self.deliverer = deliver.Deliverer.for_targets(
            runner.notify, service.secrets_of(runner), config=str(runner.path)
        )
        self.mask: Callable[[str], str] = (
            self.deliverer.senders[0].mask if self.deliverer.senders else str
        )
        self.poll_s = service.POLL_S
        self.final_s = service.FINAL_DEADLINE_S
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="multirun-notify", daemon=True)

    def __enter__(self) -> _Alerts:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from multirun.services.notify.events import left_open

        self.done.set()
        self.thread.join(timeout=self.poll_s + 5)
        self._guarded(self.watcher.poll)
        account = self.runner.account(self.name)
        self._guarded(lambda: [e for e in [left_open(self.layout, [account])] if e is not None])
        if not self.deliverer.close(self.final_s):
            _say(f"warning: notify: stopped with messages not sent (deadline {self.final_s:g} s)")

    def fatal(self, why: str) -> None:
        text = f"{self.name}: FATAL: {why} (exit {EXIT_FATAL}: starting it again would fail again)"
        self.deliverer.put(Event("fatal", text, self.name, State.FATAL))

    def _loop(self) -> None:
        while True:
            self._guarded(self.watcher.poll)
            if self.done.wait(self.poll_s):
                return

    def _guarded(self, step: Callable[[], list[Event]]) -> None:
        """Each event to its targets; a failure is logged (masked), never fatal."""
        try:
            for event in step():
                self.deliverer.put(event)
        except Exception as exc:  # alerts never end the run
            _say(f"warning: notify: {self.mask(f'{type(exc).__name__}: {exc}')}")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
