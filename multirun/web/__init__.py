"""The web dashboard: the fleet at a glance in a browser, live, with stop/start/restart.

A small standard-library HTTP server (``server``) answers one self-contained page
(``page.html``: inline CSS and JavaScript, nothing fetched from elsewhere) and its JSON.
What it shows is read from the state directory (``fleet``: ``multirun status``'s
snapshot, each worker's status file, log tails, the journals read-only), cached briefly
so any number of open pages cost one read; what it does goes through the supervisor's
control socket (``actions``), exactly as ``multirun stop/start/restart`` do. It never
talks to a worker, so a page can neither slow a tick nor see anything a tick holds.
``guard`` holds every access rule (loopback or a token, the session cookie, the CSRF
token, the ``Host`` and ``Origin`` checks, read-only mode).

It runs as a supervised service child with ``web:`` in runner.yaml, or standalone with
``multirun dashboard``. May import ``core``, ``config.specs`` (its settings), ``ops``
(status collection, the control client, log parsing) and ``account.journal.reader``;
never the supervisor's internals, never a worker's.
"""

from __future__ import annotations

from multirun.web.server import Dashboard, serve

__all__ = ["Dashboard", "serve"]
