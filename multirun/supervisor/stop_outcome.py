"""What a stop owes the operator beyond what the journals say, and its verdict.

The final report (:mod:`multirun.account.final_report`) reads what each journal still
holds. The arbiter adds what no journal tells: the accounts it had to sweep and why their
worker was gone, the workers it had to kill, an account whose holdings are unknown (its
worker killed with no journal to read), a service that died. :meth:`StopOutcome.verdict`
turns both into the exit status and the final lines, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multirun.account import final_report
from multirun.account.final_report import Leftover
from multirun.core.states import State
from multirun.supervisor.program import Proc

Line = tuple[str, str | None]  # a final line and the account it is about (None: the run)


class StopOutcome:
    """The stop's own findings, gathered as it goes, and its verdict."""

    def __init__(self) -> None:
        self.problems: list[str] = []  # what made the run fail that no journal tells
        self.unknowns: dict[str, str] = {}  # account with no journal -> how its worker went
        self.swept: dict[str, str] = {}  # accounts the stop swept -> how their worker went
        self.killed: dict[str, str] = {}  # account -> why the stop SIGKILLed its worker
        self._final: tuple[int, list[Line]] | None = None

    def kill(self, proc: Proc, why: str) -> None:
        """The stop SIGKILLs ``proc``'s worker (``why``)."""
        self.killed.setdefault(proc.name, why)
        self.unknown(proc, why)

    def sweep(self, account: Proc) -> None:
        """``account``'s worker is gone and its journal holds trades: it is swept."""
        self.swept[account.name] = self.killed.get(account.name) or (
            f"its worker: {account.last_exit}" if account.last_exit else "no worker ran"
        )

    def problem(self, reason: str) -> None:
        """Something no journal tells went wrong: the verdict names it (exit 1)."""
        if reason not in self.problems:
            self.problems.append(reason)

    def unknown(self, proc: Proc, how: str) -> None:
        """``proc``'s worker went otherwise than asked (``how``): with no journal to read,
        what it left is unknown; with one, the final report tells."""
        if proc.program.sweep is None and not proc.program.service:
            self.unknowns.setdefault(proc.name, how)  # the first word: why it was killed

    def verdict(
        self, left_open: Mapping[str, Leftover], accounts: Iterable[Proc]
    ) -> tuple[int, list[Line]]:
        """The exit status and the final lines: what each account still holds, which
        accounts needed a sweep, the verdict. Computed once, from the final report."""
        if self._final is not None:
            return self._final
        lines: list[Line] = []
        for left in left_open.values():
            lines += [(line, left.account) for line in final_report.lines([left])]
        swept = final_report.swept(self.swept)
        if swept is not None:
            lines.append((swept, None))
        fatal = [p for p in accounts if p.state == State.FATAL]
        problems = [f"FATAL: {', '.join(p.name for p in fatal)} (see above)"] if fatal else []
        if len(fatal) == 1 and fatal[0].last_error:  # its cause, in the one line read
            problems = [f"FATAL: {fatal[0].name}: {fatal[0].last_error}"]
        problems += [
            f"what {name} holds is unknown ({how}, no journal to read)"
            for name, how in self.unknowns.items()
        ]
        code, last = final_report.verdict(left_open, [*problems, *self.problems])
        self._final = code, [*lines, (last, None)]
        return self._final
