"""What each part of the arbiter (stopping, commands, exits) may use of the rest.

:class:`multirun.supervisor.arbiter.Arbiter` is assembled from mixins, each one job; they call a few
of the arbiter's own methods. Those are declared once, here, for the type checker only:
at run time the arbiter's own definitions are the ones found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multirun.supervisor.program import Proc


class ArbiterPart:
    """The base of every part of the arbiter."""

    if TYPE_CHECKING:

        def log(self, message: str, account: str | None = None) -> None: ...

        def spawn(self, proc: Proc) -> None: ...

        def transition(self, proc: Proc, new: str, *, note: str | None = None) -> None: ...

        def save(self, *, now: bool = False) -> None: ...
