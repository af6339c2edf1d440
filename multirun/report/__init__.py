"""`multirun report`: what each account did, from its journal alone (no server, no supervisor).

``build(state_dir, ...)`` reads the journals (:mod:`multirun.account.journal.reader`, read-only) and
computes one :class:`~multirun.report.stats.Stats` per account and the total;
``run(...)`` prints the table or JSON and writes the CSV, HTML and PNG asked for. The
cli loads the runner file and passes its state directory and account names: this
package imports neither ``config`` nor any strategy code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multirun.account.journal.reader import AccountLog, JournalTrade, paused, read
from multirun.core.errors import UsageError
from multirun.core.statedir import StateDir
from multirun.report import render
from multirun.report.stats import Stats, account_stats, period_trades, total_stats


@dataclass(frozen=True)
class Report:
    """The journals read, their statistics (the total last) and what the reader should know."""

    logs: tuple[AccountLog, ...]
    rows: tuple[Stats, ...]
    notes: tuple[str, ...]
    since: float | None
    trades: tuple[tuple[str, JournalTrade], ...]  # (account, trade), as they opened


def parse_since(text: str | None) -> float | None:
    """``--since``: an ISO date or date-time; UTC unless it says otherwise."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: not a date (e.g. 2026-11-30 or 2026-11-30T08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def account_names(
    state_dir: Path, configured: Sequence[str] = (), wanted: Sequence[str] = ()
) -> list[str]:
    """The accounts to report: ``wanted`` (each must have a journal), else the configured
    accounts with a journal, then any other journal in the state directory."""
    present = StateDir(state_dir).account_names()
    if wanted:
        missing = [n for n in wanted if n not in present]
        if missing:
            raise UsageError(f"no journal for {', '.join(missing)} in {state_dir}")
        return list(dict.fromkeys(wanted))
    ordered = [n for n in configured if n in present]
    return ordered + [n for n in present if n not in ordered]


def build(
    state_dir: Path,
    *,
    configured: Sequence[str] = (),
    wanted: Sequence[str] = (),
    since: float | None = None,
) -> Report:
    names = account_names(state_dir, configured, wanted)
    logs = tuple(read(StateDir(state_dir).account(n).journal, n) for n in names)
    rows = [account_stats(log, since) for log in logs]
    rows.append(total_stats(logs, since))
    notes = tuple(_notes(logs, rows, state_dir, configured))
    return Report(logs, tuple(rows), notes, since, tuple(period_trades(logs, since)))


def run(
    state_dir: Path,
    *,
    configured: Sequence[str] = (),
    wanted: Sequence[str] = (),
    since: str | None = None,
    json_output: bool = False,
    csv_path: Path | None = None,
    html_path: Path | None = None,
    png_path: Path | None = None,
    title: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """The command's body: print the table (or JSON), write the files asked for."""
    report = build(state_dir, configured=configured, wanted=wanted, since=parse_since(since))
    if csv_path is not None:
        csv_path.write_text(render.to_csv(report.rows), encoding="utf-8")
    if html_path is not None or png_path is not None:
        from multirun.report import chart  # matplotlib: only when a picture is wanted

        fig = chart.figure(report.logs, report.since)
        try:
            if html_path is not None:
                page = render.to_html(report.rows, chart.svg(fig), report.notes,
                                      title=f"multirun report: {title or state_dir}",
                                      trades=report.trades)  # fmt: skip
                html_path.write_text(page, encoding="utf-8")
            if png_path is not None:
                chart.write_png(fig, png_path)
        finally:
            chart.close(fig)
    if json_output:
        echo(render.to_json(report.rows, report.notes, report.since, report.trades))
    else:
        echo(render.table(report.rows, report.notes))
        for label, path in (("csv", csv_path), ("html", html_path), ("png", png_path)):
            if path is not None:
                echo(f"wrote {path} ({label})")
    return 0


def _notes(
    logs: Sequence[AccountLog], rows: Sequence[Stats], state_dir: Path, configured: Sequence[str]
) -> list[str]:
    notes = []
    if not logs:
        notes.append(f"no account journal in {state_dir}")
    for log, row in zip(logs, rows, strict=False):
        if not log.has_prices and log.trades:
            notes.append(f"{log.name}: journal written before prices were kept: P&L unknown")
        elif row.trades_closed > row.priced:
            notes.append(f"{log.name}: {row.trades_closed - row.priced} closed trade(s) "
                         "without a P&L in the journal")  # fmt: skip
        quoted = sum(1 for t in log.trades if t.is_closed and t.price_source == "quote")
        if quoted:
            notes.append(f"{log.name}: {quoted} trade(s) priced from the last quote seen, not "
                         "the server's history (off by the spread and any move since)")  # fmt: skip
        if configured and log.name not in configured:
            notes.append(f"{log.name}: not in the runner file (a renamed or removed account)")
        pause = paused(StateDir(state_dir).account(log.name).journal, log.name)
        if pause is not None:
            notes.append(pause_note(log.name, pause))
    return notes


def pause_note(name: str, pause: dict[str, Any]) -> str:
    """``a: PAUSED since 2026-12-07 14:02 UTC: daily loss 312.40 > 300 (nothing opens until
    multirun resume, or 2026-12-08 00:00 UTC)``, from its journal."""

    def when(value: object) -> str:
        if not isinstance(value, int | float):
            return "?"
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")

    until = pause.get("until")
    lifts = "" if until is None else f", or {when(until)}"
    return (
        f"{name}: PAUSED since {when(pause.get('since'))}: {pause.get('reason') or 'paused'} "
        f"(nothing opens until `multirun resume`{lifts})"
    )
