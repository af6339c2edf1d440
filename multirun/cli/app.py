"""The ``multirun`` command: a thin shell over the library.

Each command parses its options, calls one library function, and prints. Errors
are multirun's own exceptions (:mod:`multirun.core.errors`), turned into a one-line
message and an exit code (:func:`multirun.cli.args.fail`): never a traceback for a user
error. The commands that act on a supervisor are in :mod:`multirun.cli.supervisor_commands`
(registered here, in the order ``multirun --help`` lists them); what the commands share
is in :mod:`multirun.cli.args`.
"""

# No `from __future__ import annotations` here: typer reads each command's annotations
# when it builds the command line, and evaluating them from strings costs ~7 ms a build.

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from multirun.cli import supervisor_commands as cli_control
from multirun.cli.args import (
    LOG_LEVEL_HELP,
    ConfigArg,
    StateDirOption,
    config_and_names,
    fail,
    set_log_level,
)
from multirun.core.errors import MultirunError, exit_code_for

app = typer.Typer(
    name="multirun",
    help="Run one trading strategy per ALGOGENE account from one runner.yaml.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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
    from multirun.cli import (
        validate as configcli,  # imported here: other commands need not load jsonschema
    )

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
    from multirun.cli import validate as configcli

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
    rate_limit_rate: Annotated[
        str, typer.Option(help="Share of 429 replies (Retry-After), nothing executed.", metavar="R")
    ] = "0",
    retry_after_s: Annotated[
        str, typer.Option(help="The Retry-After of a 429, seconds.", metavar="S")
    ] = "1",
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
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="Serve /metrics on HOST:PORT (any host: e.g. 0.0.0.0:9464 in a container) "
            "instead of CONFIG's `metrics.listen` port plus the account's position.",
            metavar="HOST:PORT",
        ),
    ] = None,
) -> None:
    """Run one account of CONFIG in the foreground until SIGTERM/SIGINT.

    SIGTERM/SIGINT finish the current tick, then apply the account's `on_stop` and exit 0.
    SIGHUP (the supervisor died) stops within 2 s and closes nothing. With `server: sim`
    and no --server, an in-process simulator is started (for demos). With `metrics:` it
    serves its own /metrics, with `notify:` it sends its own alerts; under systemd
    (NOTIFY_SOCKET) it says READY=1 once up and WATCHDOG=1 as it beats. See docs/deploy.md.
    """
    from multirun.config import loader as runner_config
    from multirun.supervisor import standalone

    set_log_level(log_level)
    runner = runner_config.load(config)
    code = standalone.run(
        runner, name, server_url=server, start_server=_in_process_sim,
        metrics_listen=metrics_listen,
    )  # fmt: skip
    raise typer.Exit(code)


@contextlib.contextmanager
def _in_process_sim() -> Iterator[str]:
    """A simulator in this process for `run-account` with `server: sim`; yields its URL."""
    from multirun.sim import SimConfig, SimServer

    with SimServer(SimConfig()) as sim:
        yield sim.base_url


# The commands that act on a supervisor (multirun.cli.supervisor_commands), in the help's order.
for command in (
    cli_control.start,
    cli_control.stop,
    cli_control.restart,
    cli_control.pause,
    cli_control.resume,
    cli_control.flatten,
    cli_control.reload,
    cli_control.status,
    cli_control.logs,
    cli_control.health,
    cli_control.dashboard,
):
    app.command()(command)


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
    from multirun import export as exporter

    try:
        written = exporter.export(
            fmt,
            exporter.load(config),
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


@app.command("notify-test")
def notify_test(config: ConfigArg = Path("runner.yaml")) -> None:
    """Send one test message to each `notify:` target of CONFIG; print ok or failed per
    target (its URL masked). Exit 1 when any target did not take it."""
    from multirun.config import loader as runner_config
    from multirun.services.notify import service

    try:
        code = service.notify_test(runner_config.load(config), echo=typer.echo)
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


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
    from multirun.config import loader as runner_config
    from multirun.ops import close as closeout

    config, names = closeout.split_args(args)
    try:
        runner = runner_config.load(config)
        code = closeout.close_accounts(
            runner, names, borrow=borrow, server_url=server, timeout_s=timeout
        )
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


@app.command()
def report(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] [NAME...]: the runner file (runner.yaml), accounts."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only from this UTC date or time on.", metavar="DATE")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write the table as CSV.", metavar="FILE")
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained HTML page.", metavar="FILE"),
    ] = None,
    png_file: Annotated[
        Path | None, typer.Option("--png", help="Write the chart as a PNG.", metavar="FILE")
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """What each account did, from its journal: trades, win rate, P&L, drawdown, exposure.

    Reads the journals only (read-only: no server, no supervisor needed, safe while
    running). --html writes one page with the equity curves, trade markers and the table.
    """
    from multirun import report as account_report
    from multirun.config import loader as runner_config

    config, names = config_and_names(args)
    try:
        configured: list[str] = []
        if state_dir is None or config.exists():
            runner = runner_config.load_for_control(config)
            configured = [account.name for account in runner.accounts]
            state_dir = state_dir or runner.state_dir
        code = account_report.run(
            state_dir, configured=configured, wanted=names, since=since,
            json_output=json_output, csv_path=csv_file, html_path=html_file,
            png_path=png_file, title=str(config) if configured else None, echo=typer.echo,
        )  # fmt: skip
    except MultirunError as error:
        fail(error)
    raise typer.Exit(code)


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
