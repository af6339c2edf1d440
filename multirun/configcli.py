"""What ``multirun validate`` and ``multirun schema`` print (kept out of cli.py, which is shared).

Output goes to stdout, one problem per line as ``FILE:LINE:COL: PATH: message`` (the form
editors and CI annotators parse); the exit code says whether the file is valid.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from multirun import config
from multirun.errors import EXIT_FAILURE, EXIT_OK

TABLE_COLUMNS = ("name", "runmode", "accountid", "strategy", "instrument", "volume", "interval")


def run_validate(path: Path, *, json_output: bool = False, strict: bool = False) -> int:
    """Validate ``path``, print the outcome, return the exit code (UsageError propagates)."""
    report = config.validate(path, strict=strict)
    typer.echo(json.dumps(report.to_dict(), indent=2) if json_output else render(report))
    return EXIT_OK if report.ok else EXIT_FAILURE


def render(report: config.Report) -> str:
    """The human form of a report: problems, or the accounts table; warnings either way."""
    lines = [str(problem) for problem in report.problems]
    if report.ok and report.spec is not None:
        lines += table(report.rows())
    lines += [str(warning) for warning in report.warnings]
    lines.append(summary(report))
    return "\n".join(lines)


def table(rows: list[dict[str, object]]) -> list[str]:
    """A plain, aligned text table; disabled accounts are marked, keys are never shown."""
    cells = [list(TABLE_COLUMNS)]
    for row in rows:
        values = [_cell(row[column]) for column in TABLE_COLUMNS]
        if not row["enabled"]:
            values[0] += " (disabled)"
        cells.append(values)
    widths = [max(len(r[i]) for r in cells) for i in range(len(TABLE_COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def summary(report: config.Report) -> str:
    counts = {"error": len(report.problems)}
    for warning in report.warnings:
        counts[warning.severity] = counts.get(warning.severity, 0) + 1
    parts = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n]
    if report.ok and report.spec is not None:
        enabled = len(report.spec.enabled_accounts)
        accounts = len(report.spec.accounts)
        head = f"{report.file}: valid, {accounts} account{'s' if accounts != 1 else ''}"
        head += f" ({enabled} enabled)"
        return head + (f"; {', '.join(parts)}" if parts else "")
    return f"{report.file}: invalid: {', '.join(parts)}"


def schema_json() -> str:
    """The schema as ``multirun schema`` prints it."""
    return json.dumps(config.schema(), indent=2)
