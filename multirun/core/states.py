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
(guardrail tripped: no new orders until restarted), PAUSED (no new opens, by the
operator, a money limit or the trading hours; closes still act, until resumed),
STOPPED. ``multirun status`` shows HALTED or PAUSED in place of the supervisor's
RUNNING when the worker reports it.

A :class:`State` is a ``str``: it is written to and read from JSON files as its name.
"""

from enum import StrEnum


class State(StrEnum):
    """One state, spelled as ``status`` prints it and the state files store it."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FATAL = "FATAL"
    HALTED = "HALTED"
    PAUSED = "PAUSED"
    OVERDUE = "OVERDUE"


# Every state, in the order ``multirun status`` documents them.
STATES = tuple(State)

# States in which a process of ours is alive.
ALIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING, State.OVERDUE})

# The moves a supervised process may make; anything else is a bug in the supervisor.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.STOPPED}),
    State.STARTING: frozenset(
        {State.RUNNING, State.BACKOFF, State.FATAL, State.STOPPING, State.STOPPED, State.OVERDUE}
    ),
    State.RUNNING: frozenset(
        {State.BACKOFF, State.STOPPING, State.STOPPED, State.OVERDUE, State.FATAL}
    ),
    State.OVERDUE: frozenset(
        {State.RUNNING, State.BACKOFF, State.STOPPING, State.STOPPED, State.FATAL}
    ),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPING, State.STOPPED, State.FATAL}),
    State.STOPPING: frozenset({State.STOPPED, State.FATAL}),
    State.FATAL: frozenset({State.STARTING, State.FATAL, State.STOPPED}),
    State.HALTED: frozenset({State.RUNNING, State.STOPPED}),
    State.PAUSED: frozenset({State.RUNNING, State.HALTED, State.STOPPED}),
}


def allowed(old: str, new: str) -> bool:
    """Whether a process may move from ``old`` to ``new``."""
    return new in TRANSITIONS.get(State(old), frozenset()) if old in STATES else False


def parse(text: object, default: State = State.STOPPED) -> State:
    """The state a file says, or ``default`` when it names none (missing, or unknown)."""
    return State(text) if isinstance(text, str) and text in State.__members__ else default
