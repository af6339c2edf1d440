"""The ``multirun`` command: a thin shell over the library.

Each command parses its options, calls one library function, and prints. Errors
are multirun's own exceptions (:mod:`multirun.errors`), turned into a one-line
message and an exit code in :func:`main` only: never a traceback for a user error.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from multirun.errors import (
    ConfigError,
    MultirunError,
    SupervisorError,
    UsageError,
    exit_code_for,
)

if TYPE_CHECKING:
    from multirun.specs import RunnerSpec

app = typer.Typer(
    name="multirun",
    help="Run one trading strategy per ALGOGENE account from one runner.yaml.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="The runner file.", show_default=True)]
StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="The state directory (instead of CONFIG's).", metavar="DIR"),
]


def _print_version(wanted: bool) -> None:
    if wanted:
        from multirun import __version__

        typer.echo(f"multirun {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Run one trading strategy per ALGOGENE account from one runner.yaml."""


@app.command()
def validate(
    config: ConfigArg = Path("runner.yaml"),
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
    online: Annotated[
        bool, typer.Option("--online", help="Also check each enabled account on its server.")
    ] = False,
    server: Annotated[
        str | None, typer.Option(help="With --online: the server URL to check against.")
    ] = None,
) -> None:
    """Check CONFIG against the schema and semantic rules; report every problem.

    Exit 0 when valid (printing the accounts), 1 when invalid (printing every problem as
    FILE:LINE:COL: PATH: message), 2 when CONFIG cannot be read. With --online, each
    enabled account then logs in and its account, instrument, volume and margin are
    checked (GET requests only: no order is ever sent); exit 1 if any check fails.
    """
    from multirun import configcli  # imported here: other commands need not load jsonschema

    try:
        code = configcli.run_validate(
            config, json_output=json_output, strict=strict, online=online, server=server
        )
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of runner.yaml."""
    from multirun import configcli

    try:
        typer.echo(configcli.schema_json())
    except MultirunError as error:
        fail(error)


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Interface to bind.", metavar="HOST")] = "127.0.0.1",
    port: Annotated[str, typer.Option(help="TCP port (0: any free port).", metavar="N")] = "8765",
    token_ttl: Annotated[
        str, typer.Option(help="Session token lifetime, seconds.", metavar="S")
    ] = "3600",
    seed: Annotated[
        str, typer.Option(help="Seed of prices, trade ids and faults.", metavar="N")
    ] = "1",
    accounts: Annotated[
        str | None, typer.Option(help="Accept only these users/accounts.", metavar="FILE")
    ] = None,
    fill_delay_ms: Annotated[
        str, typer.Option(help="Delay before a market order fills.", metavar="N")
    ] = "20",
    latency_ms: Annotated[
        str, typer.Option(help="Delay added to every API reply.", metavar="N")
    ] = "0",
    jitter_ms: Annotated[
        str, typer.Option(help="Random extra delay, up to N ms.", metavar="N")
    ] = "0",
    error_rate: Annotated[
        str, typer.Option(help="Share of 5xx replies, nothing executed.", metavar="R")
    ] = "0",
    drop_rate: Annotated[
        str, typer.Option(help="Share of dropped connections.", metavar="R")
    ] = "0",
    malformed_rate: Annotated[
        str, typer.Option(help="Share of executed, garbled replies.", metavar="R")
    ] = "0",
    revoke_rate: Annotated[
        str, typer.Option(help="Share of calls whose token is revoked.", metavar="R")
    ] = "0",
    slow_success_rate: Annotated[
        str, typer.Option(help="Share of executed, held replies.", metavar="R")
    ] = "0",
    slow_success_ms: Annotated[
        str, typer.Option(help="How long held replies are held.", metavar="N")
    ] = "30000",
    trickle_rate: Annotated[
        str, typer.Option(help="Share of executed replies written byte by byte.", metavar="R")
    ] = "0",
    trickle_ms: Annotated[
        str, typer.Option(help="Pause between the bytes of a trickled reply.", metavar="N")
    ] = "1000",
    huge_rate: Annotated[
        str, typer.Option(help="Share of executed replies gzip-padded to --huge-mb.", metavar="R")
    ] = "0",
    huge_mb: Annotated[
        str, typer.Option(help="Decompressed size of a huge reply, MiB.", metavar="N")
    ] = "8",
    partial_listing_rate: Annotated[
        str, typer.Option(help="Share of trade listings missing some/all trades.", metavar="R")
    ] = "0",
    missing_ref_rate: Annotated[
        str, typer.Option(help="Share of trade listings missing order_Ref fields.", metavar="R")
    ] = "0",
    late_exec_rate: Annotated[
        str, typer.Option(help="Share of orders taken on --late-exec-s late.", metavar="R")
    ] = "0",
    late_exec_s: Annotated[
        str, typer.Option(help="How late a late order is taken on (<= 30).", metavar="S")
    ] = "20",
    late_exec_ack: Annotated[
        str, typer.Option(help="Share of late orders answered late, not dropped.", metavar="R")
    ] = "0.5",
    refuse_after_exec_rate: Annotated[
        str, typer.Option(help="Share of executed orders answered 401.", metavar="R")
    ] = "0",
    one_token_per_user: Annotated[
        bool, typer.Option(help="A new session revokes the user's earlier tokens.")
    ] = False,
) -> None:
    """Run the local ALGOGENE-compatible simulator in the foreground; print its base URL."""
    from multirun.sim import serve
    from multirun.sim.options import config_from_options

    options = dict(locals())
    config = config_from_options(**options)

    def ready(url: str) -> None:
        typer.echo(url)
        typer.echo("multirun sim: serving (Ctrl-C or SIGTERM to stop)", err=True)
        sys.stdout.flush()

    serve(config, on_ready=ready)


@app.command("run-account")
def run_account(
    config: Annotated[Path, typer.Argument(help="The runner file.")],
    name: Annotated[str, typer.Argument(help="The account (its `name` in CONFIG) to run.")],
    server: Annotated[
        str | None,
        typer.Option(help="Server base URL; overrides CONFIG's `server` (e.g. a running sim)."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help=LOG_LEVEL_HELP, metavar="LEVEL")
    ] = None,
) -> None:
    """Run one account of CONFIG in the foreground until SIGTERM/SIGINT.

    SIGTERM/SIGINT finish the current tick, then apply the account's `on_stop` and exit 0.
    SIGHUP (the supervisor died) stops within 2 s and closes nothing. With `server: sim`
    and no --server, an in-process simulator is started (for demos).
    """
    from multirun import account_process
    from multirun import config as runner_config

    _set_log_level(log_level)
    runner = runner_config.load(config)
    code = account_process.run_account(
        runner, name, server_url=server, start_server=_in_process_sim
    )
    raise typer.Exit(code)


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_HELP = "Workers' log level: debug (shows ctx.log.debug), info, warning, error."


def _set_log_level(level: str | None) -> None:
    """``--log-level``: the workers' level, through the environment forked workers inherit."""
    if level is None:
        return
    if level.lower() not in LOG_LEVELS:
        fail(UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"))
    from multirun.account_process import LOG_LEVEL_ENV

    os.environ[LOG_LEVEL_ENV] = level.lower()


@contextlib.contextmanager
def _in_process_sim() -> Iterator[str]:
    """A simulator in this process for `run-account` with `server: sim`; yields its URL."""
    from multirun.sim import SimConfig, SimServer

    with SimServer(SimConfig()) as sim:
        yield sim.base_url


Names = Annotated[
    list[str] | None,
    typer.Argument(help="[CONFIG] NAME...: the runner file (runner.yaml), then accounts."),
]


def _config_and_names(args: list[str] | None) -> tuple[Path, list[str]]:
    """``[CONFIG] NAME...``: the first argument is CONFIG when it names a file (or ends in
    .yaml/.yml), else CONFIG is runner.yaml and every argument is an account name."""
    args = list(args or [])
    if args and (args[0].endswith((".yaml", ".yml")) or Path(args[0]).is_file()):
        return Path(args[0]), args[1:]
    return Path("runner.yaml"), args


def _control_wait_s(runner: object) -> float:
    """How long a per-account command waits: a stop, its sweep, a start, with margin."""
    stop_timeout = float(getattr(runner, "stop_timeout_s", 30.0))
    return 2 * stop_timeout + 120.0


@app.command()
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
    SIGHUP reloads CONFIG. Exit 0 when every account stopped cleanly.

    With NAMEs and a supervisor running CONFIG: start those accounts (held stopped,
    disabled or FATAL ones too) and wait until they run. Without one: like --only NAME.
    """
    from multirun import config as runner_config
    from multirun import configcli, controlclient, launch, locate
    from multirun.logs import LogFormat

    config, names = _config_and_names(args)
    if log_format not in ("text", "json"):
        fail(UsageError(f"--log-format must be text or json, not {log_format!r}"))
    _set_log_level(log_level)
    try:
        locate.refuse_other_config(config, locate.target(config).state_dir)  # names the first
        if names and (control := locate.target(config)).running is not None:
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
            rereader=_reread,
        )
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


def _reread(path: str) -> tuple[RunnerSpec | None, list[str]]:
    """For the supervisor's reload: CONFIG re-read and validated, or the problems as
    `validate` prints them."""
    from multirun import config as runner_config
    from multirun import configcli

    try:
        report = runner_config.validate(Path(path))
    except MultirunError as error:
        return None, [f"multirun: error: {error}"]
    if not report.ok or report.spec is None:
        return None, configcli.render(report).splitlines()
    return report.spec, []


@app.command()
def stop(
    args: Names = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait (default: stop_timeout + 30).", metavar="S"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Kill what the stop waits for (a second Ctrl-C).")
    ] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Stop the supervisor running CONFIG (through state_dir/supervisor.pid) and wait for it.

    With NAMEs: stop only those accounts (their on_stop applies); the others go on.
    Exit 0 when every account stopped cleanly, or when none was running. Works while
    CONFIG is broken (it only locates the state_dir); refuses a supervisor of another config.
    """
    from multirun import controlclient, launch, locate
    from multirun.errors import SupervisorError

    config, names = _config_and_names(args)
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
        wait = timeout if timeout is not None else runner.stop_timeout_s + launch.STOP_MARGIN_S
        code = launch.stop(runner.state_dir, timeout_s=wait, echo=typer.echo)
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


@app.command()
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
    from multirun import controlclient, locate

    config, names = _config_and_names(args)
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


@app.command()
def reload(
    config: ConfigArg = Path("runner.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
) -> None:
    """Apply an edited CONFIG to the running supervisor: only what changed restarts.

    Prints the plan (+ added, - removed, ~ changed, = unchanged), then each touched
    account's new state. An invalid file changes nothing (its problems are printed as
    `validate` prints them); a top-level setting that cannot apply live is refused.
    """
    from multirun import config as runner_config
    from multirun import configcli, controlclient, locate

    try:
        try:
            runner_config.load_for_control(config)
        except ConfigError:  # broken: its problems as validate prints them; nothing sent
            typer.echo(configcli.render(runner_config.validate(config)), err=True)
            raise typer.Exit(1) from None
        runner = locate.target(config)
        if runner.foreign:
            raise SupervisorError(f"{runner.foreign}: not reloading it")
        code = controlclient.reload(
            runner.state_dir, config, dry_run=dry_run, timeout_s=_control_wait_s(runner),
            echo=typer.echo, echo_err=_echo_err,
        )  # fmt: skip
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


@app.command()
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
    from multirun import status as account_status

    try:
        code = account_status.run(config, state_dir=state_dir, json_output=json_output, watch=watch)
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


@app.command()
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
    from multirun import logview

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


@app.command()
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
    from multirun import config as runner_config
    from multirun import health as account_health

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


@app.command()
def export(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="systemd, kubernetes or compose.")],
    config: ConfigArg = Path("runner.yaml"),
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Directory to write into.", metavar="DIR")
    ] = Path("."),
    name: Annotated[
        str, typer.Option(help="Prefix of units, objects and services.", metavar="NAME")
    ] = "multirun",
    image: Annotated[
        str | None,
        typer.Option(help="Container image (kubernetes, compose).", metavar="IMAGE"),
    ] = None,
    executable: Annotated[
        Path | None,
        typer.Option(help="Absolute path of multirun (systemd; default: this one).", metavar="P"),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(help="systemd User= (default: you, unless root; '' for none).", metavar="U"),
    ] = None,
) -> None:
    """Write what runs each enabled account of CONFIG on systemd, Kubernetes or Compose.

    Every unit runs `multirun run-account CONFIG NAME`; credentials go by variable name
    (an env file or Secret template with empty values, never a value). See docs/deploy.md.
    """
    from multirun import config as runner_config
    from multirun import export as exporter

    try:
        written = exporter.export(
            fmt,
            runner_config.load_for_control(config),
            output,
            name=name,
            image=image or exporter.DEFAULT_IMAGE,
            executable=executable,
            user=user,
        )
    except MultirunError as error:
        fail(error)
    for path in written.written:
        typer.echo(f"wrote {path}")
    for path in written.kept:
        typer.echo(f"kept {path} (already there: it may hold your values)")
    for note in written.notes:
        typer.echo(f"note: {note}", err=True)


@app.command("close")
def close_journals(
    args: Annotated[
        list[str], typer.Argument(help="[CONFIG] NAME...: the runner file, then accounts.")
    ],
    borrow: Annotated[
        str | None,
        typer.Option("--as", help="Borrow this configured account's credentials.", metavar="N"),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Server base URL; overrides CONFIG's `server`.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to keep trying (default: stop_timeout).")
    ] = None,
) -> None:
    """Close what the journals of accounts NAME... hold, confirmed by the server.

    For a renamed or removed account (`start` names its journal), or to flatten one now.
    Loads no strategy code. A NAME not in CONFIG uses the credentials of the configured
    account on the same server account, or those of --as N. Exit 0 when nothing is left.
    """
    from multirun import closeout
    from multirun import config as runner_config

    config, names = closeout.split_args(args)
    try:
        runner = runner_config.load(config)
        code = closeout.close_accounts(
            runner, names, borrow=borrow, server_url=server, timeout_s=timeout
        )
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


def fail(error: MultirunError) -> None:
    """Print ``error`` as one line on stderr and exit with its code."""
    typer.echo(f"multirun: error: {error}", err=True)
    raise SystemExit(exit_code_for(error))


def main() -> None:
    if sys.platform == "win32":
        typer.echo("multirun: error: Windows is not supported (Linux and macOS only)", err=True)
        sys.exit(2)
    try:
        app()
    except MultirunError as error:
        fail(error)
    except KeyboardInterrupt:
        sys.exit(exit_code_for(KeyboardInterrupt()))
