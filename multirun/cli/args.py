"""What the `multirun` commands share: argument types, ``[CONFIG] NAME...``, the log
level, and the one way a command fails (one line on stderr, the error's exit code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from multirun.core.errors import MultirunError, UsageError, exit_code_for

ConfigArg = Annotated[Path, typer.Argument(help="The runner file.", show_default=True)]
StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="The state directory (instead of CONFIG's).", metavar="DIR"),
]

Names = Annotated[
    list[str] | None,
    typer.Argument(help="[CONFIG] NAME...: the runner file (runner.yaml), then accounts."),
]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_HELP = "Workers' log level: debug (shows ctx.log.debug), info, warning, error."


def set_log_level(level: str | None) -> None:
    """``--log-level``: the workers' level, through the environment forked workers inherit."""
    if level is None:
        return
    if level.lower() not in LOG_LEVELS:
        fail(UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"))
    from multirun.account.process import LOG_LEVEL_ENV

    os.environ[LOG_LEVEL_ENV] = level.lower()


def config_and_names(args: list[str] | None) -> tuple[Path, list[str]]:
    """``[CONFIG] NAME...``: the first argument is CONFIG when it names a file (or ends in
    .yaml/.yml), else CONFIG is runner.yaml and every argument is an account name."""
    args = list(args or [])
    if args and (args[0].endswith((".yaml", ".yml")) or Path(args[0]).is_file()):
        return Path(args[0]), args[1:]
    return Path("runner.yaml"), args


def fail(error: MultirunError) -> None:
    """Print ``error`` as one line on stderr and exit with its code."""
    typer.echo(f"multirun: error: {error}", err=True)
    raise SystemExit(exit_code_for(error))
