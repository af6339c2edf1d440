"""The worker's guardrails: what forbids opening a trade now, and which failures halt it.

Pure checks over an account's spec, journal and reconciler (:mod:`multirun.account.worker`
logs and records what they return):

- :func:`refusal`: no opening while the journal refuses new orders (ownership), while
  an order is UNCERTAIN or not settled yet, above ``max_volume``, beyond
  ``max_open_trades`` (counting what the server lists as well as the journal) or
  ``max_orders_per_hour``.
- :func:`failure_halt` and :func:`status_halt`: after ``halt_after_failures``
  consecutive failed ticks, failed orders or unwritten statuses, the worker is HALTED.
"""

from __future__ import annotations

from multirun.account.journal.store import Journal
from multirun.account.reconcile import Reconciler
from multirun.config.specs import AccountSpec


def refusal(
    spec: AccountSpec, journal: Journal, reconciler: Reconciler, now: float
) -> tuple[str, str] | None:
    """Why no trade may be opened at ``now``, as (kind, message), or None."""
    guard = spec.guardrails
    refused = getattr(journal, "refusal", None)  # the journal's own (ownership)
    if refused:
        return "journal", str(refused)
    unsettled = journal.intents()
    if unsettled:
        refs = ", ".join(i.order_ref for i in unsettled)
        what = "UNCERTAIN" if reconciler.uncertain else "not settled yet"
        return "unsettled", f"order {refs} is {what} (never sending another meanwhile)"
    if guard.max_volume is not None and spec.volume > guard.max_volume:
        return (
            "max_volume",
            f"volume {spec.volume:g} is above max_volume {guard.max_volume:g}",
        )
    # Counted from the journal and from the server's listings (a listing may show
    # trades the journal does not hold: a duplicate, a trade without its orderRef).
    held = {row.order_ref for row in journal.held()}
    r = reconciler
    open_count = len(held | r.visible) + len(r.extras) + len(r.unattributed)
    if open_count + 1 > guard.max_open_trades:
        return "max_open_trades", (
            f"max_open_trades {guard.max_open_trades} reached ({open_count} open)"
        )
    sent = journal.sent_since(now - 3600)
    if sent >= guard.max_orders_per_hour:
        return "max_orders_per_hour", f"max_orders_per_hour {guard.max_orders_per_hour} reached"
    return None


def failure_halt(
    spec: AccountSpec, failures: int, order_failures: int, last_error: str | None
) -> str | None:
    """Why the worker halts after a failed tick (consecutive failed ticks or orders), or None."""
    limit = spec.guardrails.halt_after_failures
    if limit and failures >= limit:
        return f"{failures} consecutive failed ticks; last: {last_error}"
    if limit and order_failures >= limit:
        return f"{order_failures} consecutive failed orders; last: {last_error}"
    return None


def status_halt(spec: AccountSpec, status_failures: int, why: str | None = None) -> str | None:
    """Why the worker halts after ticks whose status could not be written (``why``: the
    write's error, e.g. a full disk's "No space left on device"), or None."""
    limit = spec.guardrails.halt_after_failures
    if limit and status_failures >= limit:
        cause = f" ({why})" if why else ""
        return f"status.json could not be written {status_failures} ticks in a row{cause}"
    return None
