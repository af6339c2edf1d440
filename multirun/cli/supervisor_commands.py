"""The `multirun` commands that act on a supervisor: start, stop, restart, reload, status,
logs, health and dashboard (registered on the app by :mod:`multirun.cli.app`, in its help's order).

Each parses its arguments, finds the supervisor (:mod:`multirun.ops.locate`), calls one
library function (:mod:`multirun.supervisor.launch`, :mod:`multirun.ops.control_client`,
:mod:`multirun.ops.status`, :mod:`multirun.ops.logs_view`, :mod:`multirun.ops.health`,
:mod:`multirun.web`) and exits
with its status.
"""

# No `from __future__ import annotations` here: typer reads each command's annotations
# when it builds the command line, and evaluating them from strings costs ~7 ms a build.

from pathlib import Path
from typing import Annotated

import typer

from multirun.cli.args import (
    LOG_LEVEL_HELP,
    ConfigArg,
    Names,
    StateDirOption,
    config_and_names,
    fail,
    set_log_level,
)
from multirun.core.errors import ConfigError, MultirunError, SupervisorError, UsageError


def _control_wait_s(runner: object) -> float:
    """How long a per-account command waits: a stop, its sweep, a start, with margin."""
    stop_timeout = float(getattr(runner, "stop_timeout_s", 30.0))
    return 2 * stop_timeout + 120.0


def start(
    args: Names = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Start only this account (repeatable).", metavar="NAME"),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Also start livetrade (real money) accounts.")
    ] = False,
    log_format: Annotated[
        str, typer.Option("--log-format", help="Terminal output: text or json.", metavar="FORMAT")
    ] = "text",
    log_level: Annotated[
        str | None, typer.Option("--log-level", help=LOG_LEVEL_HELP, metavar="LEVEL")
    ] = None,
) -> None:
    """Start every enabled account of CONFIG under one supervisor, in the foreground.

    Validates CONFIG first (refusing to start on any problem), then runs one process per
    account, restarting crashed ones with backoff. Ctrl-C or SIGTERM (or `multirun stop`)
    stops them all: SIGTERM, then SIGKILL after `stop_timeout`; Ctrl-C twice forces.
    SIGHUP reloads CONFIG. Exit 0 when the stop left nothing open (on_stop: keep aside).

    With NAMEs and a supervisor running CONFIG: start those accounts (held stopped,
    disabled or FATAL ones too) and wait until they run. Without one: like --only NAME.
    """
    from multirun.cli import validate as configcli
    from multirun.config import loader as runner_config
    from multirun.ops import control_client as controlclient
    from multirun.ops import locate
    from multirun.supervisor import launch
    from multirun.supervisor.output import LogFormat

    config, names = config_and_names(args)
    if log_format not in ("text", "json"):
        fail(UsageError(f"--log-format must be text or json, not {log_format!r}"))
    set_log_level(log_level)
    try:
        control = locate.target(config)  # read once: the file parsed, the host's records listed
        locate.refuse_other_config(config, control.running, control.state_dir)  # names the first
        if names and control.running is not None:
            if control.foreign:
                raise SupervisorError(f"{control.foreign}: not starting accounts on it")
            code = controlclient.command(
                control.state_dir, "start", names, timeout_s=_control_wait_s(control),
                echo=typer.echo, echo_err=_echo_err,
            )  # fmt: skip
            raise typer.Exit(code)
        report = runner_config.validate(config)
        if not report.ok or report.spec is None:
            typer.echo(configcli.render(report), err=True)
            raise typer.Exit(1)
        fmt: LogFormat = "json" if log_format == "json" else "text"
        code = launch.start(
            report.spec,
            only=[*(only or ()), *names],
            live=live,
            log_format=fmt,
            rereader=configcli.reread,
        )
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


def stop(
    args: Names = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait (default: the supervisor's own stop deadline, plus 10).",
            metavar="S",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Kill what the stop waits for (a second Ctrl-C).")
    ] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Stop the supervisor running CONFIG (through state_dir/supervisor.pid) and wait for it.

    With NAMEs: stop only those accounts (their on_stop applies); the others go on.
    Exit 0 when it left nothing open (on_stop: keep aside), or none was running. Works while
    CONFIG is broken (it only locates the state_dir); refuses a supervisor of another config.
    """
    from multirun.core.errors import SupervisorError
    from multirun.ops import control_client as controlclient
    from multirun.ops import locate
    from multirun.ops import stop as stopping

    config, names = config_and_names(args)
    try:
        runner = locate.target(config, state_dir)  # never loads the config or a strategy
        if runner.foreign:
            raise SupervisorError(f"{runner.foreign}: not stopping it")
        if names:
            code = controlclient.command(
                runner.state_dir, "stop", names, timeout_s=timeout or _control_wait_s(runner),
                echo=typer.echo, echo_err=_echo_err,
            )  # fmt: skip
            raise typer.Exit(code)
        if force:
            controlclient.shutdown(runner.state_dir, force=True)
        code = stopping.stop(runner.state_dir, timeout_s=timeout, echo=typer.echo)
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def restart(
    args: Names = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the trades open: the new process adopts them.")
    ] = False,
) -> None:
    """Restart accounts NAME... of the running supervisor: stop (on_stop), then start.

    Also resumes a HALTED or FATAL account. Prints each account's new state; exit 0 only
    if every one is RUNNING again.
    """
    from multirun.ops import control_client as controlclient
    from multirun.ops import locate

    config, names = config_and_names(args)
    if not names:
        fail(UsageError("restart takes [CONFIG] NAME..."))
    try:
        runner = locate.target(config)  # never loads the config or a strategy
        if runner.foreign:
            raise SupervisorError(f"{runner.foreign}: not restarting accounts on it")
        code = controlclient.command(
            runner.state_dir, "restart", names, keep=keep, timeout_s=_control_wait_s(runner),
            echo=typer.echo, echo_err=_echo_err,
        )  # fmt: skip
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


AllOption = Annotated[bool, typer.Option("--all", help="Every account the supervisor runs.")]


def _pause_command(cmd: str, args: list[str] | None, every: bool) -> None:
    """pause, resume, flatten: [CONFIG] NAME...|--all through the control socket."""
    from multirun.ops import locate
    from multirun.ops import pause as pausing

    config, names = config_and_names(args)
    try:
        runner = locate.target(config)  # never loads the config or a strategy
        if runner.foreign:
            raise SupervisorError(f"{runner.foreign}: not sending {cmd} to it")
        code = pausing.send(
            runner.state_dir, cmd, names, every=every, timeout_s=_control_wait_s(runner),
            echo=typer.echo, echo_err=_echo_err,
        )  # fmt: skip
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def pause(args: Names = None, every: AllOption = False) -> None:
    """Pause accounts NAME... (or --all): no new opens until `multirun resume`.

    The strategy still ticks; its closes and FLAT still act. Kept across restarts
    (journaled). Prints each account's state and reason; exit 0 when every one is PAUSED.
    """
    _pause_command("pause", args, every)


def resume(args: Names = None, every: AllOption = False) -> None:
    """Resume accounts NAME... (or --all) that are PAUSED: they open again.

    Paused by an operator, a money limit or a flatten. Exit 0 when every one is RUNNING.
    """
    _pause_command("resume", args, every)


def flatten(args: Names = None, every: AllOption = False) -> None:
    """Close every trade of accounts NAME... (or --all), confirmed, then pause them.

    `multirun resume` to trade again; the processes keep running. Prints what each
    closed and what is still open (its journal); exit 0 when every one is PAUSED
    holding nothing.
    """
    _pause_command("flatten", args, every)


def reload(
    config: ConfigArg = Path("runner.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
) -> None:
    """Apply an edited CONFIG to the running supervisor: only what changed restarts.

    Prints the plan (+ added, - removed, ~ changed, = unchanged), then each touched
    account's new state. An invalid file changes nothing (its problems are printed as
    `validate` prints them); a top-level setting that cannot apply live is refused.
    """
    from multirun.cli import validate as configcli
    from multirun.config import loader as runner_config
    from multirun.ops import control_client as controlclient
    from multirun.ops import locate

    try:
        try:
            runner_config.load_for_control(config)
        except ConfigError:  # broken: its problems as validate prints them; nothing sent
            typer.echo(configcli.render(runner_config.validate(config)), err=True)
            raise typer.Exit(1) from None
        runner = locate.target(config)
        moved = _running_from(config) if runner.running is None else None
        if moved is not None:  # its state_dir edited: that supervisor refuses it, naming it
            runner = locate.target(config, moved)
        if runner.foreign:
            raise SupervisorError(f"{runner.foreign}: not reloading it")
        code = controlclient.reload(
            runner.state_dir, config, dry_run=dry_run, timeout_s=_control_wait_s(runner),
            echo=typer.echo, echo_err=_echo_err,
        )  # fmt: skip
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def _running_from(config: Path) -> Path | None:
    """The supervisor started from ``config`` on another state dir than the file names
    now (found by its host record): a reload there refuses the edited ``state_dir``."""
    from multirun.account.ownership import runtime_dir
    from multirun.core.procutil import looks_like_multirun
    from multirun.core.statefiles import read_supervisor_records
    from multirun.ops import locate

    try:
        records = read_supervisor_records(runtime_dir())
    except (OSError, MultirunError):
        return None
    for record in records:
        started = record.get("config")
        alive = looks_like_multirun(record["pid"])
        if alive and started and locate.same_file(started, config) and record.get("state_dir"):
            return Path(str(record.get("state_dir")))
    return None


def status(
    config: ConfigArg = Path("runner.yaml"),
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    state_dir: StateDirOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every second until Ctrl-C.")
    ] = False,
) -> None:
    """Show each account's state, pid, uptime, restarts, ticks, open trades, token, errors.

    What the running supervisor runs (and accounts only in CONFIG, as such); after a stop,
    the last known details. Works while CONFIG is broken. Exit 0 when every enabled
    account is RUNNING, 3 when some are not, 4 when no supervisor runs.
    """
    from multirun.ops import status as account_status

    try:
        code = account_status.run(config, state_dir=state_dir, json_output=json_output, watch=watch)
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def logs(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] [NAME...]: the runner file (runner.yaml), accounts."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("-n", "--tail", help="Only the last N lines.", metavar="N")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """The log files of every account (or the NAMEd ones) merged by time, coloured as the
    supervisor's terminal; -f follows them. Works with or without a running supervisor."""
    from multirun.ops import logs_view as logview

    words = list(args or [])
    config = Path("runner.yaml")
    if words and (words[0].endswith((".yaml", ".yml")) or Path(words[0]).is_file()):
        config = Path(words.pop(0))
    if tail is not None and tail < 0:
        fail(UsageError("-n must be 0 or more"))
    try:
        code = logview.run(
            config,
            words,
            state_dir=state_dir,
            follow=follow,
            tail=tail,
            log_format="json" if json_output else "text",
        )
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def health(
    args: Annotated[
        list[str], typer.Argument(help="[CONFIG] NAME: the runner file (runner.yaml), an account.")
    ],
    grace: Annotated[
        float, typer.Option(help="Seconds allowed beyond the interval.", metavar="S")
    ] = 60.0,
    liveness: Annotated[
        bool, typer.Option("--liveness", help="Only alive and ticking: HALTED passes.")
    ] = False,
) -> None:
    """Exit 0 when account NAME ticked within its interval plus a grace (or is starting).

    Otherwise exit 1 with one line saying why: no status file, never ticked, stale, HALTED,
    STOPPED, not running. Reads the state directory only (probes and monitoring use it).
    """
    from multirun.config import loader as runner_config
    from multirun.ops import health as account_health

    if len(args) > 2:
        fail(UsageError("health takes [CONFIG] NAME"))
    config, name = (Path(args[0]), args[1]) if len(args) == 2 else (Path("runner.yaml"), args[0])
    try:
        verdict = account_health.check(
            runner_config.load_for_control(config), name, grace_s=grace, liveness=liveness
        )
    except MultirunError as error:
        fail(error)
    typer.echo(verdict.line, err=not verdict.ok)
    raise typer.Exit(0 if verdict.ok else 1)


def dashboard(
    config: ConfigArg = Path("runner.yaml"),
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="ADDR",
            help="host:port (default: web.listen, else 127.0.0.1:8700); off loopback "
            "only with web.token.",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show only: no stop, start or restart.")
    ] = False,
) -> None:
    """Serve the live web dashboard of the supervisor running CONFIG, until Ctrl-C.

    The same page as `web:` in runner.yaml: every account's state, position, P&L, logs
    and trades, with stop, start and restart. It reads the state directory and acts
    through the control socket, so it never slows a tick.
    """
    from multirun.config import loader as runner_config
    from multirun.config.specs import WebSpec
    from multirun.ops import locate
    from multirun.web import server

    try:
        runner = runner_config.load_for_control(config)
        base = runner.web or WebSpec.parse()
        token = base.token.reveal() if base.token else None
        if token and runner_config.UNSET_FOR_CONTROL in token:
            raise UsageError("web.token names a variable that is not set in this shell")
        try:
            spec = WebSpec.parse(listen or base.listen, token, read_only or base.read_only)
        except ValueError as error:
            raise UsageError(f"--listen: {error}") from None
        where = locate.target(config)
        if where.foreign:
            raise SupervisorError(f"{where.foreign}: not serving it")
        page = server.for_runner(
            runner, spec, state_dir=where.state_dir, wait_s=server.control_wait_s(runner)
        )
        code = server.run(page, lambda url: None)
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)
