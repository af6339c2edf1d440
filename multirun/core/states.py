"""Every state a supervised process or an account can be in, and which moves are allowed.

Import-free on purpose (like supervisord's ``states.py``): any module may import it, and
it imports nothing of ours.

Process states (the supervisor's view of one child)::

    STOPPED --start--> STARTING --worker up (reconciled), or startsecs--> RUNNING
    STARTING/RUNNING --exit--> BACKOFF --delay--> STARTING
    STARTING --crash loop--> FATAL
    any running state --stop--> STOPPING --exit--> STOPPED
    RUNNING --heartbeat late--> OVERDUE --killed--> BACKOFF

Account states (the worker's own view, in its ``status.json``): RUNNING, HALTED
(guardrail tripped: no new orders until restarted), STOPPED. ``multirun status`` shows
HALTED in place of the supervisor's RUNNING when the worker reports it.
"""

STARTING = "STARTING"
RUNNING = "RUNNING"
BACKOFF = "BACKOFF"
STOPPING = "STOPPING"
STOPPED = "STOPPED"
FATAL = "FATAL"
HALTED = "HALTED"
OVERDUE = "OVERDUE"

# Every state, in the order ``multirun status`` documents them.
STATES = (STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, FATAL, HALTED, OVERDUE)

# States in which a process of ours is alive.
ALIVE = frozenset({STARTING, RUNNING, STOPPING, OVERDUE})

# The moves a supervised process may make; anything else is a bug in the supervisor.
TRANSITIONS: dict[str, frozenset[str]] = {
    STOPPED: frozenset({STARTING, STOPPED}),
    STARTING: frozenset({RUNNING, BACKOFF, FATAL, STOPPING, STOPPED, OVERDUE}),
    RUNNING: frozenset({BACKOFF, STOPPING, STOPPED, OVERDUE, FATAL}),
    OVERDUE: frozenset({RUNNING, BACKOFF, STOPPING, STOPPED, FATAL}),
    BACKOFF: frozenset({STARTING, STOPPING, STOPPED, FATAL}),
    STOPPING: frozenset({STOPPED, FATAL}),
    FATAL: frozenset({STARTING, FATAL, STOPPED}),
    HALTED: frozenset({RUNNING, STOPPED}),
}


def allowed(old: str, new: str) -> bool:
    """Whether a process may move from ``old`` to ``new``."""
    return new in TRANSITIONS.get(old, frozenset())
