"""The ``multirun`` command: a thin shell over the library.

Each command parses its options, calls one library function, and prints. Errors
are multirun's own exceptions (:mod:`multirun.errors`), turned into a one-line
message and an exit code in :func:`main` only: never a traceback for a user error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from multirun.errors import MultirunError, exit_code_for

app = typer.Typer(
    name="multirun",
    help="Run one trading strategy per ALGOGENE account from one runner.yaml.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="The runner file.", show_default=True)]


@app.command()
def validate(
    config: ConfigArg = Path("runner.yaml"),
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
) -> None:
    """Check CONFIG against the schema and semantic rules; report every problem.

    Exit 0 when valid (printing the accounts), 1 when invalid (printing every problem as
    FILE:LINE:COL: PATH: message), 2 when CONFIG cannot be read.
    """
    from multirun import configcli  # imported here: other commands need not load jsonschema

    try:
        code = configcli.run_validate(config, json_output=json_output, strict=strict)
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
) -> None:
    """Run one account of CONFIG in the foreground until SIGTERM/SIGINT.

    SIGTERM/SIGINT finish the current tick, then apply the account's `on_stop` and exit 0.
    SIGHUP (the supervisor died) stops within 2 s and closes nothing. With `server: sim`
    and no --server, an in-process simulator is started (for demos).
    """
    from multirun import config as runner_config
    from multirun import worker

    runner = runner_config.load(config)
    raise typer.Exit(worker.run_account(runner, name, server_url=server))


@app.command()
def start() -> None:
    """Start every enabled account of CONFIG under one supervisor."""
    raise NotImplementedError("start: see issue 6")


@app.command()
def stop() -> None:
    """Stop a running supervisor of CONFIG and wait for it."""
    raise NotImplementedError("stop: see issue 6")


@app.command()
def status() -> None:
    """Show each account's state."""
    raise NotImplementedError("status: see issue 6")


def fail(error: MultirunError) -> None:
    """Print ``error`` as one line on stderr and exit with its code."""
    typer.echo(f"multirun: error: {error}", err=True)
    raise SystemExit(exit_code_for(error))


def main() -> None:
    try:
        app()
    except MultirunError as error:
        fail(error)
    except KeyboardInterrupt:
        sys.exit(exit_code_for(KeyboardInterrupt()))
