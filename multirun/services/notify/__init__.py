"""Alerts without Prometheus: webhook targets told of account trouble (``notify:``).

A supervised service child (:mod:`multirun.services.notify.service`) polls ``supervisor.json`` and
each account's ``status.json`` once a second, turns what changed into events
(:mod:`.events`), and posts them from a bounded queue per target, with retries
(:mod:`.deliver`), in the target's format (:mod:`.formats`). See docs/alerts.md.
"""

from __future__ import annotations

EVENTS = (
    "fatal",
    "halted",
    "backoff",
    "overdue",
    "recovered",
    "risk_breach",
    "paused",
    "resumed",
    "uncertain",
    "rejected",
    "left_open",
    "daily_summary",
    "supervisor_died",
)
FORMATS = ("json", "slack", "discord", "telegram")
