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
    """Check CONFIG against the schema and semantic rules; report every problem."""
    raise NotImplementedError("validate: see issue 2")


@app.command()
def schema() -> None:
    """Print the JSON Schema of runner.yaml."""
    raise NotImplementedError("schema: see issue 2")


@app.command()
def sim() -> None:
    """Run the local ALGOGENE-compatible simulator in the foreground."""
    raise NotImplementedError("sim: see issue 3")


@app.command("run-account")
def run_account() -> None:
    """Run one account of CONFIG in the foreground until SIGTERM/SIGINT."""
    raise NotImplementedError("run-account: see issue 5")


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
