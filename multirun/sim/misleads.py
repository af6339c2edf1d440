"""Reply bodies of a server that misleads: listings that omit trades or their ``order_Ref``.

Each function takes a listing body (``{"count": n, "res": [trade, ...]}``) and a
generator seeded for that one reply, and returns the body as the fault shows it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

Body = dict[str, Any]


def partial_listing(body: Body, rng: random.Random) -> Body:
    """Some or all of the trades left out (none listed half the time); ``count`` follows."""
    rows = list(body.get("res") or [])
    if len(rows) <= 1 or rng.random() < 0.5:
        kept: list[Any] = []
    else:
        dropped = set(rng.sample(range(len(rows)), rng.randint(1, len(rows) - 1)))
        kept = [row for i, row in enumerate(rows) if i not in dropped]
    return {**body, "count": len(kept), "res": kept}


def missing_ref(body: Body, rng: random.Random) -> Body:
    """At least one listed trade (each with even odds) without its ``order_Ref`` field."""
    rows = [dict(row) for row in body.get("res") or []]
    if rows:
        chosen = {i for i in range(len(rows)) if rng.random() < 0.5} or {rng.randrange(len(rows))}
        for i in chosen:
            rows[i].pop("order_Ref", None)
    return {**body, "res": rows}


SHAPES: dict[str, Callable[[Body, random.Random], Body]] = {
    "partial_listing": partial_listing,
    "missing_ref": missing_ref,
}
