"""The body posted for an event, in each target format; every text masked first.

- ``json``: multirun's own fields (``event``, ``account``, ``state``, ``text``,
  ``time_utc``, and the event's data), plus ``source: "multirun"`` and ``config``;
- ``slack``: ``{"text": ...}`` (an incoming webhook);
- ``discord``: ``{"content": ...}`` (at most 2000 characters);
- ``telegram``: ``{"chat_id": ..., "text": ...}`` for ``.../bot<TOKEN>/sendMessage?chat_id=N``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from multirun.services.notify.events import Event

DISCORD_LIMIT = 2000
TELEGRAM_LIMIT = 4096


def text(event: Event, dropped: int = 0) -> str:
    """The one human line (or lines) of an event, as every chat format shows it."""
    note = f"\n({dropped} earlier alert(s) dropped: the queue was full)" if dropped else ""
    return f"multirun: {event.text}{note}"


def body(
    fmt: str,
    event: Event,
    mask: Callable[[str], str],
    *,
    url: str = "",
    config: str = "",
    dropped: int = 0,
) -> dict[str, Any]:
    """The JSON body for ``event`` in format ``fmt``, masked by ``mask``."""
    line = mask(text(event, dropped))
    if fmt == "slack":
        return {"text": line}
    if fmt == "discord":
        return {"content": cut(line, DISCORD_LIMIT)}
    if fmt == "telegram":
        out: dict[str, Any] = {"text": cut(line, TELEGRAM_LIMIT)}
        chat = parse_qs(urlsplit(url).query).get("chat_id")
        if chat:
            out["chat_id"] = chat[0]
        return out
    data = {"source": "multirun", "config": config, **event.to_dict(), "dropped": dropped}
    return json.loads(mask(json.dumps(data)))


def cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."
