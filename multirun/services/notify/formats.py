"""The body posted for an event, in each target format; every text masked first.

- ``json``: multirun's own fields (``event``, ``account``, ``state``, ``text``,
  ``time_utc``, and the event's data), plus ``source: "multirun"`` and ``config``;
- ``slack``: ``{"text": ..., "mrkdwn": false}`` (an incoming webhook);
- ``discord``: ``{"content": ..., "allowed_mentions": {"parse": []}}`` (at most 2000
  characters);
- ``telegram``: ``{"chat_id": ..., "text": ...}`` for ``.../bot<TOKEN>/sendMessage?chat_id=N``.

A text may quote anything (a strategy's error, the server's refusal), so each chat
format gets it as literal text, never as markup: Slack's control characters ``&``,
``<``, ``>`` become entities (``<!channel>`` would ping the whole channel) and its
mrkdwn is off; Discord's markdown characters are backslash-escaped and no mention is
parsed (``@everyone``, ``<@id>`` ping no one); Telegram's text is plain (no
``parse_mode``). Masking comes first, so an escape never splits a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from multirun.services.notify.events import Event

DISCORD_LIMIT = 2000
TELEGRAM_LIMIT = 4096
SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Markdown, mentions (@everyone, <@id>, <#id>), masked links ([x](url)), headers, quotes.
DISCORD_MARKUP = frozenset("\\*_~`|<>[]#@")


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
        return {"text": slack_escaped(line), "mrkdwn": False}
    if fmt == "discord":
        return {
            "content": cut(discord_escaped(line), DISCORD_LIMIT),
            "allowed_mentions": {"parse": []},
        }
    if fmt == "telegram":
        out: dict[str, Any] = {"text": cut(line, TELEGRAM_LIMIT)}
        chat = parse_qs(urlsplit(url).query).get("chat_id")
        if chat:
            out["chat_id"] = chat[0]
        return out
    data = {"source": "multirun", "config": config, **event.to_dict(), "dropped": dropped}
    return json.loads(mask(json.dumps(data)))


def slack_escaped(line: str) -> str:
    """``line`` as Slack shows it literally."""
    return "".join(SLACK_ENTITIES.get(char, char) for char in line)


def discord_escaped(line: str) -> list[str]:
    """``line`` as Discord shows it literally, one piece per character."""
    return ["\\" + char if char in DISCORD_MARKUP else char for char in line]


def cut(pieces: Sequence[str], limit: int) -> str:
    """``pieces`` joined, at most ``limit`` characters: when too long, as many whole
    pieces as fit then ``...`` (an escape is never cut in two)."""
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept, room = [], limit - 3
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept) + "..."
