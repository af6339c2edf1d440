"""What ``multirun validate`` and ``multirun schema`` print: a check's report, rendered.

Output goes to stdout, one problem per line as ``FILE:LINE:COL: PATH: message`` (the form
editors and CI annotators parse), or the report as JSON; the exit code says whether the
file is valid. No API key is shown: only its mask, and every other shown value is masked
of any key it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from multirun.account import ownership
from multirun.config import loader as config
from multirun.config import schema
from multirun.config.findings import CheckReport, Problem
from multirun.config.specs import AccountSpec, RunnerSpec, format_interval
from multirun.core.errors import EXIT_FAILURE, EXIT_OK, MultirunError

TABLE_COLUMNS = ("name", "runmode", "accountid", "strategy", "instrument", "volume", "interval")


def run_validate(
    path: Path,
    *,
    json_output: bool = False,
    strict: bool = False,
    online: bool = False,
    server: str | None = None,
) -> int:
    """Validate ``path``, print the outcome, return the exit code (UsageError propagates).

    ``online``: a valid file's enabled accounts are then checked against the server
    (:mod:`multirun.ops.online_check`; ``server`` overrides the file's).
    """
    report = config.validate(path, strict=strict)
    report.warnings += orphan_warnings(report)
    if not online or not report.ok or report.spec is None:
        typer.echo(json.dumps(report_dict(report), indent=2) if json_output else render(report))
        return EXIT_OK if report.ok else EXIT_FAILURE
    from multirun.ops import online_check as remote  # imported here: it loads the HTTP client

    results = remote.check_runner(report.spec, server=server)
    redact = remote.redactor(report.spec)
    if json_output:
        document = {**report_dict(report), "online": json.loads(remote.to_json(results, redact))}
        document["ok"] = document["online"]["ok"]
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(render(report))
        typer.echo(remote.render(results, redact))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def orphan_warnings(report: CheckReport) -> list[Problem]:
    """One warning per journal in the state dir holding open trades that no configured
    account owns (renamed or removed), naming them and the ``multirun close`` command."""
    if report.spec is None:
        return []
    orphans = ownership.orphan_journals(report.spec)
    return [
        Problem(report.file, 1, 1, "state_dir", line, "warning")
        for line in ownership.orphan_lines(report.spec, orphans)
    ]


def account_row(account: AccountSpec) -> dict[str, str | float | bool]:
    """What ``validate`` shows of an account: no secret, only its masked hint."""
    return {
        "name": account.name,
        "runmode": account.runmode,
        "accountid": account.accountid,
        "strategy": account.strategy,
        "instrument": account.instrument,
        "volume": account.volume,
        "interval": format_interval(account.interval_s),
        "enabled": account.enabled,
        "api_key": account.api_key.masked(),
    }


def rows(report: CheckReport) -> list[dict[str, str | float | bool]]:
    """The accounts as ``validate`` shows them: a key used as another value is masked too."""
    if report.spec is None:
        return []
    redact = report.redactor()
    return [
        {k: redact(v) if isinstance(v, str) else v for k, v in row.items()}
        for row in map(account_row, report.spec.accounts)
    ]


def report_dict(report: CheckReport) -> dict[str, object]:
    """The report as ``validate --json`` prints it."""
    return {
        "file": report.file,
        "ok": report.ok,
        "problems": [p.to_dict() for p in report.problems],
        "warnings": [w.to_dict() for w in report.warnings],
        "accounts": rows(report),
    }


def render(report: CheckReport) -> str:
    """The human form of a report: problems, or the accounts table; warnings either way."""
    lines = [str(problem) for problem in report.problems]
    if report.ok and report.spec is not None:
        lines += table(rows(report))
    lines += [str(warning) for warning in report.warnings]
    lines.append(summary(report))
    return "\n".join(lines)


def table(accounts: list[dict[str, str | float | bool]]) -> list[str]:
    """A plain, aligned text table; disabled accounts are marked, keys are never shown."""
    cells = [list(TABLE_COLUMNS)]
    for row in accounts:
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


def summary(report: CheckReport) -> str:
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
    return json.dumps(schema.document(), indent=2)


def reread(path: str) -> tuple[RunnerSpec | None, list[str]]:
    """For the supervisor's reload: CONFIG re-read and validated, or the problems as
    ``validate`` prints them."""
    try:
        report = config.validate(Path(path))
    except MultirunError as error:
        return None, [f"multirun: error: {error}"]
    if not report.ok or report.spec is None:
        return None, render(report).splitlines()
    return report.spec, []
