"""``multirun start`` and ``stop``: from a runner spec to a running arbiter, and back.

``start`` chooses the accounts (enabled ones, ``--only``, livetrade only with
``--live``), imports what every child needs once before the first fork (children share
those pages: a fork server, not one fresh interpreter per account), and runs an
:class:`~multirun.supervisor.arbiter.Arbiter` over one worker program per account, plus the
simulator as a service when the runner says ``server: sim``. ``stop`` signals the
supervisor running on a state directory and waits for it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial

from multirun.account import final_report, ownership
from multirun.account.final_report import Leftover
from multirun.config.specs import SERVICE_NAMES, AccountSpec, RunnerSpec
from multirun.core.errors import SupervisorError, UsageError
from multirun.core.statedir import StateDir
from multirun.core.statefiles import condition_line, money_line
from multirun.supervisor.account_requests import Reread
from multirun.supervisor.arbiter import Arbiter
from multirun.supervisor.fork import ChildContext
from multirun.supervisor.output import LogFormat, LogRouter
from multirun.supervisor.program import Program, RestartPolicy, Sweep

SIM, METRICS, NOTIFY, WEB = SERVICE_NAMES
SIM_READY_TIMEOUT_S = 30.0
SIM_STOP_TIMEOUT_S = 5.0


def select_accounts(
    runner: RunnerSpec, only: Sequence[str] = (), *, live: bool = False
) -> list[AccountSpec]:
    """The accounts ``start`` runs: enabled ones (or ``--only`` ones); livetrade needs --live."""
    names = {a.name for a in runner.accounts}
    unknown = [n for n in only if n not in names]
    if unknown:
        known = ", ".join(sorted(names))
        raise UsageError(f"--only: no account named {', '.join(unknown)} (accounts: {known})")
    chosen = [a for a in runner.accounts if not only or a.name in only]
    disabled = [a.name for a in chosen if not a.enabled]
    if only and disabled:
        raise UsageError(f"--only: account {', '.join(disabled)} is disabled (enabled: false)")
    chosen = [a for a in chosen if a.enabled]
    real_money = [a.name for a in chosen if a.is_live]
    if real_money and not live:
        raise SupervisorError(
            f"livetrade account(s) {', '.join(real_money)} trade real money: start with --live, "
            "or leave them out with --only"
        )
    if not chosen:
        raise UsageError(f"no enabled account to start in {runner.path}")
    return chosen


# Below this many accounts the warm-up costs the supervisor about what it saves: the
# simulator's modules and what the run leaves (~3 MiB) against ~0.7 MiB per account.
WARM_FROM_ACCOUNTS = 5


def preload(
    runner: RunnerSpec,
    accounts: Sequence[AccountSpec],
    warm: Callable[[], object] | None = None,
) -> None:
    """Import what every child needs once, here, so forked children share those pages
    (and do not each spend ~13 ms of CPU importing the worker and the client); ``warm``
    then runs a worker's code once (:mod:`multirun.supervisor.warmup`), so the code each
    worker runs is already warm and shared, for :data:`WARM_FROM_ACCOUNTS` accounts or
    more."""
    import requests  # noqa: F401

    import multirun.account.process
    import multirun.api.client
    from multirun import strategies
    from multirun.api import models

    for spec in accounts:
        strategies.resolve(spec.strategy, runner.config_dir)
    models.prepare_time_parsing()
    if runner.uses_sim:
        import multirun.sim
    if runner.notify:
        import multirun.services.notify.service  # noqa: F401
    if len(accounts) >= WARM_FROM_ACCOUNTS:
        if warm is None:
            from multirun.supervisor.warmup import warm_worker_code

            warm = warm_worker_code
        warm()
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared objects


def fresh_strategy_module(ref: str) -> None:
    """In a new worker: forget the user's strategy module the supervisor preloaded, so a
    restart (``multirun restart NAME``, a reload) imports the file as it is now. The
    package's own modules and the libraries it imports stay shared."""
    from multirun import strategies

    module_name = strategies.BUILTINS.get(ref, ref).partition(":")[0]
    if module_name and module_name != "multirun" and not module_name.startswith("multirun."):
        sys.modules.pop(module_name, None)


def run_worker(runner: RunnerSpec, name: str, context: ChildContext) -> int:
    """An account's program: the worker, against the simulator when one announced itself;
    it tells the arbiter of its condition and money on its pipe, and reads its commands."""
    from multirun.account import process as account_process

    fresh_strategy_module(runner.account(name).strategy)
    url = context.announced.get(SIM)
    return account_process.run_account(
        runner, name, server_url=url, supervised=True, on_up=lambda: context.ready("up"),
        on_condition=lambda state, reason: context.ready(condition_line(state, reason)),
        on_money=MoneyReport(context.ready), commands=context.commands,
    )  # fmt: skip


class MoneyReport:
    """A worker's ``on_money`` (called once a tick): a :func:`money_line` on its pipe to
    the arbiter when the day's P&L or the equity changed (to the cent), else nothing."""

    def __init__(self, ready: Callable[[str], None]) -> None:
        self.ready = ready
        self.last: str | None = None

    def __call__(self, day_pnl: float, equity: float | None) -> None:
        line = money_line(day_pnl, equity)
        if line != self.last:
            self.last = line
            self.ready(line)


def sweep_from_journal(runner: RunnerSpec, name: str, context: ChildContext) -> int:
    """An account's sweep: its on_stop applied from its journal, with no strategy code."""
    from multirun.account import process as account_process

    url = context.announced.get(SIM) or runner.server
    return account_process.run_sweep(runner, name, server_url=url, deadline_s=runner.stop_timeout_s)


def leftover(runner: RunnerSpec, name: str) -> Leftover:
    """What account ``name``'s journal still holds (read without its lock)."""
    spec = runner.account(name)
    journal = StateDir(runner.state_dir).account(name).journal
    return final_report.journal_leftovers(journal, spec.order_ref_prefix, name, spec.on_stop)


def serve_sim(context: ChildContext) -> int:
    """The simulator's program: serve on a free port, announce the URL, run until SIGTERM."""
    from multirun.sim import SimConfig, serve

    serve(SimConfig(host="127.0.0.1", port=0), on_ready=context.ready)
    return 0


def account_program(runner: RunnerSpec, name: str) -> Program:
    """Account ``name``'s worker, and its sweep."""
    return Program(
        name,
        partial(run_worker, runner, name),
        announces_up=True,
        sweep=Sweep(
            partial(sweep_from_journal, runner, name),
            partial(leftover, runner, name),
            deadline_s=runner.stop_timeout_s,
        ),
    )


def serve_metrics(runner: RunnerSpec, context: ChildContext) -> int:
    """The metrics program (with ``metrics:``): ``/metrics`` until SIGTERM."""
    from multirun.services import metrics

    assert runner.metrics is not None
    return metrics.serve(runner.metrics, runner.state_dir, context.ready)


def metrics_program(runner: RunnerSpec) -> list[Program]:
    """``/metrics`` as a service, when the runner has ``metrics:``."""
    if runner.metrics is None:
        return []
    return [
        Program(
            METRICS,
            partial(serve_metrics, runner),
            service=True,
            ready_timeout_s=SIM_READY_TIMEOUT_S,
            death_signal=signal.SIGTERM,
            stop_timeout_s=SIM_STOP_TIMEOUT_S,
            title="the metrics server",
        )
    ]


def serve_web(runner: RunnerSpec, context: ChildContext) -> int:
    """The dashboard's program (with ``web:``): ``multirun dashboard CONFIG`` in this child,
    until SIGTERM. Exec'd, not imported: the web layer sits above the supervisor (it reads
    status and talks to the control socket like any client)."""
    assert runner.web is not None
    argv = [sys.executable, "-m", "multirun", "dashboard", str(runner.path)]
    os.execv(sys.executable, [*argv, "--listen", runner.web.listen])


def web_program(runner: RunnerSpec) -> list[Program]:
    """The web dashboard as a service, when the runner has ``web:`` (see multirun.web)."""
    if runner.web is None:
        return []
    return [
        Program(
            WEB,
            partial(serve_web, runner),
            service=True,
            death_signal=signal.SIGTERM,
            stop_timeout_s=SIM_STOP_TIMEOUT_S,
            title="the dashboard",
        )
    ]


def serve_notify(runner: RunnerSpec, context: ChildContext) -> int:
    """The notifier's program (with ``notify:``): watch the state dir, post alerts."""
    from multirun.services.notify import service
    from multirun.supervisor import live_entries

    # the supervisor's memory (its control socket): right while no file can be written
    processes = live_entries.Entries(StateDir(runner.state_dir))
    names = [a.name for a in runner.accounts]
    return service.serve(runner, names, processes=processes, risk=processes.risk)


def notify_program(runner: RunnerSpec) -> list[Program]:
    """The notifier as a service, when the runner has ``notify:`` (see multirun.services.notify)."""
    if not runner.notify:
        return []
    return [
        Program(
            NOTIFY,
            partial(serve_notify, runner),
            service=True,
            death_signal=signal.SIGTERM,
            title="the notifier",
        )
    ]


def programs(runner: RunnerSpec, names: Sequence[str]) -> list[Program]:
    """The simulator (a service, with ``server: sim``), the metrics server (with
    ``metrics:``), the dashboard (with ``web:``), the notifier (with ``notify:``) and one
    worker per account."""
    accounts = [
        *metrics_program(runner),
        *web_program(runner),
        *notify_program(runner),
        *(account_program(runner, n) for n in names),
    ]
    if not runner.uses_sim:
        return accounts
    sim = Program(
        SIM,
        serve_sim,
        service=True,
        ready_timeout_s=SIM_READY_TIMEOUT_S,
        death_signal=signal.SIGTERM,
        stop_timeout_s=SIM_STOP_TIMEOUT_S,
        title="the simulator",
    )
    return [sim, *accounts]


# Re-reads a config for a reload: the new spec, or None and the problems as validate
# prints them (the cli provides it: the supervisor does not import config).
Rereader = Callable[[str], tuple[RunnerSpec | None, list[str]]]


class RunnerCatalog:
    """The running config's accounts, for per-account commands and reloads."""

    def __init__(self, runner: RunnerSpec, *, live: bool, rereader: Rereader | None) -> None:
        self.runner = runner
        self.path = str(runner.path)
        self.live = live
        self.rereader = rereader

    def names(self) -> list[str]:
        return [a.name for a in self.runner.accounts]

    def startable(self, name: str) -> bool:
        spec = next((a for a in self.runner.accounts if a.name == name), None)
        return spec is not None and spec.enabled and (self.live or not spec.is_live)

    def program(self, name: str) -> Program:
        spec = next((a for a in self.runner.accounts if a.name == name), None)
        if spec is None:
            raise UsageError(f"no account named {name} in {self.path}")
        if spec.is_live and not self.live:
            raise SupervisorError(
                f"{name} is a livetrade account (real money): the supervisor was not "
                "started with --live"
            )
        return account_program(self.runner, name)

    def reread(self, path: str) -> Reread:
        from multirun.config import reload_diff as reload

        if self.rereader is None:
            return Reread(False, ["this supervisor cannot reload"])
        spec, problems = self.rereader(path)
        if spec is None:
            return Reread(False, problems)
        holds = ownership.journal_holds(self.runner.state_dir)
        plan = reload.plan(self.runner, spec, holds, live=self.live)
        if not plan.ok:
            return Reread(False, [*plan.lines(), "a full restart is needed: stop, then start"])

        def adopt() -> None:
            self.runner, self.path = spec, path

        return Reread(
            True,
            plan.lines(),
            plan.added,
            plan.removed,
            tuple(plan.changed),
            adopt,
            stop_timeout_s=spec.stop_timeout_s,
            watchdog_timeout_s=float(spec.watchdog_timeout_s),
            secrets=tuple(secrets_of(spec)),
            risk=spec.risk,
        )


def secrets_of(runner: RunnerSpec) -> list[str]:
    return [a.api_key.reveal() for a in runner.accounts if a.api_key]


def start(
    runner: RunnerSpec,
    *,
    only: Sequence[str] = (),
    live: bool = False,
    log_format: LogFormat = "text",
    policy: RestartPolicy | None = None,
    rereader: Rereader | None = None,
) -> int:
    """Run the selected accounts of ``runner`` under one arbiter, in the foreground.

    ``rereader`` lets it reload (``multirun reload``, SIGHUP); without one it refuses to.
    """
    accounts = select_accounts(runner, only, live=live)
    names = [a.name for a in accounts]
    preload(runner, accounts)
    router = LogRouter.for_accounts(
        names,
        runner.state_dir,
        secrets_of(runner),
        log_format=log_format,
    )
    orphans = ownership.orphan_journals(runner)  # renamed, removed or rebound accounts
    for line in ownership.orphan_lines(runner, orphans):
        router.event(line)
    arbiter = Arbiter(
        programs(runner, names),
        state_dir=runner.state_dir,
        router=router,
        policy=policy,
        stop_timeout_s=runner.stop_timeout_s,
        config=str(runner.path),
        watchdog_timeout_s=float(runner.watchdog_timeout_s),
        catalog=RunnerCatalog(runner, live=live, rereader=rereader),
        risk=runner.risk,
    )
    return arbiter.run()
