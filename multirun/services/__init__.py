"""Services beside the accounts: Prometheus ``metrics`` and webhook alerts (``notify``).

Each runs in a supervised child of its own, reading what workers write; never in the way
of a tick or a stop. May import ``core``, ``config`` and ``account`` (to read what a
worker writes).
"""
