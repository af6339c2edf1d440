"""What the page's buttons do: one control-socket request each, and what it means for the
account's positions, said before anyone confirms.

An action is one :class:`Action` in :data:`ACTIONS`: the control command it sends (the
same request ``multirun stop/start/restart NAME`` sends) and the sentence its
confirmation shows ("closes 1 BUY 0.5 BTCUSD", "leaves 1 BUY 0.5 BTCUSD open"). The page
draws one button per entry, in this order.

Pause, resume and flatten do not exist in the supervisor yet. Each will be one more
entry here (its command, its effect; e.g. flatten: "closes ... and keeps it running") and
appear on the page with nothing else to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multirun.core.errors import MultirunError
from multirun.ops import control_client

CLOSE, KEEP = "close", "keep"  # on_stop's values


@dataclass(frozen=True)
class Action:
    name: str  # the control command, and the button's word
    effect: Callable[[str | None, Sequence[dict[str, Any]]], str]  # (on_stop, positions)


def held(positions: Sequence[dict[str, Any]]) -> str:
    """``1 BUY 0.5 BTCUSD``; ``2 BUY 0.5 BTCUSD, 1 SELL 0.1 ETHUSD``; ``no position``."""
    counts: dict[tuple[str, str, str], int] = {}
    for p in positions:
        volume = p.get("volume")
        key = (
            str(p.get("side") or "?"),
            f"{volume:g}" if isinstance(volume, int | float) else "?",
            str(p.get("instrument") or ""),
        )
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "no position"
    return ", ".join(" ".join(x for x in (str(n), *key) if x) for key, n in counts.items())


def _stop_effect(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> str:
    if not positions:
        return "no position open: nothing to close"
    if on_stop == CLOSE:
        return f"closes {held(positions)}"
    if on_stop == KEEP:
        return f"leaves {held(positions)} open"
    return f"applies its on_stop to {held(positions)}"


def _restart_effect(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> str:
    return f"{_stop_effect(on_stop, positions)}, then starts it again"


def _start_effect(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> str:
    adopt = f"; it adopts {held(positions)} from its journal" if positions else ""
    return f"starts its worker: it trades from its next tick{adopt}"


def _pause_effect(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> str:
    keeps = f"; it keeps {held(positions)}" if positions else ""
    return (
        "opens nothing new until resumed (kept across restarts); the strategy still ticks "
        f"and its closes act{keeps}"
    )


def _resume_effect(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> str:
    return "opens again from its next tick (a money limit still crossed pauses it again)"


def _flatten_effect(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> str:
    closes = f"closes {held(positions)}" if positions else "closes anything it holds"
    return f"{closes} (confirmed by the server), then pauses it; the process keeps running"


ACTIONS: dict[str, Action] = {
    "stop": Action("stop", _stop_effect),
    "start": Action("start", _start_effect),
    "restart": Action("restart", _restart_effect),
    "pause": Action("pause", _pause_effect),
    "resume": Action("resume", _resume_effect),
    "flatten": Action("flatten", _flatten_effect),
}


def effects(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Every action's confirmation sentence for one account."""
    return {name: action.effect(on_stop, positions) for name, action in ACTIONS.items()}


def effects_key(on_stop: str | None, positions: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """What :func:`effects` depends on (its on_stop; the positions' sides, volumes and
    instruments, as :func:`held` words them; whether there are any): two accounts with the
    same key have the same sentences (most of a fleet shares a few)."""
    return (str(on_stop), held(positions) if positions else "")


class Controller:
    """Sends an action to the supervisor of ``state_dir`` and waits for the change."""

    def __init__(self, state_dir: Path, *, timeout_s: float) -> None:
        self.state_dir = state_dir
        self.timeout_s = timeout_s

    def run(self, action: str, name: str) -> dict[str, Any]:
        """``{"ok": bool, "lines": [...], "error": ...}``; never raises for a refusal."""
        if action not in ACTIONS:
            return {"ok": False, "error": f"unknown action {action!r}", "lines": []}
        payload = {"cmd": action, "names": [name], "keep": False}
        try:
            reply = control_client.request(self.state_dir, payload, timeout_s=self.timeout_s)
        except MultirunError as error:
            return {"ok": False, "error": str(error), "lines": []}
        return {
            "ok": bool(reply.get("ok")),
            "error": reply.get("error"),
            "lines": [str(x) for x in reply.get("lines") or ()],
        }
