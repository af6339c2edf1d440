"""multirun's own exceptions, and the one place that maps them to exit codes.

Every message is one line, names what went wrong and where, and never contains
a secret (API key or session token): callers build messages from names, never
from credential values.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_API = 3
# A worker that fails the same way whatever the number of tries (its strategy cannot be
# built, its API key is refused) exits with this (sysexits' EX_CONFIG): the supervisor
# makes the account FATAL at once instead of restarting it, and systemd units list it
# in RestartPreventExitStatus.
EXIT_FATAL = 78
EXIT_INTERRUPTED = 130


class MultirunError(Exception):
    """Base of every error multirun raises on purpose; never shown as a traceback."""

    exit_code: int = EXIT_FAILURE


class FatalError(MultirunError):
    """A worker's deterministic failure (its strategy cannot be built, its key is refused,
    its account is traded by another process): retrying would fail the same way."""

    exit_code = EXIT_FATAL


class UsageError(MultirunError):
    """The command line or an input file cannot be used at all (missing, unreadable)."""

    exit_code = EXIT_USAGE


class ConfigError(MultirunError):
    """runner.yaml is invalid; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class StrategyError(MultirunError):
    """A strategy cannot be found, imported, or built from its params."""


# --- talking to ALGOGENE ---------------------------------------------------


class ApiError(MultirunError):
    """Base for every failure talking to the ALGOGENE API (or the simulator)."""

    exit_code = EXIT_API

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class NetworkError(ApiError):
    """No usable reply: connection refused or dropped, or a timeout."""


class AuthError(ApiError):
    """The server refused our credentials or our session token (HTTP 401/403)."""


class RateLimitError(ApiError):
    """The server throttled us (HTTP 429); ``retry_after_s``: how long its Retry-After
    header asked us to wait before the next request (None when it did not say)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.retry_after_s = retry_after_s


class ServerError(ApiError):
    """The server failed (HTTP 5xx)."""


class ProtocolError(ApiError):
    """The reply was not what the API documents (not JSON, missing fields, bad types)."""


class OrderRejected(ApiError):
    """The server answered and refused the order (bad parameter, unknown trade...)."""


class OrderUncertain(ApiError):
    """An order may or may not have reached the server, and reconciling failed too.

    The caller must not send it again until a later reconciliation settles it.
    """


class RequestRejected(ApiError):
    """The server refused a read (HTTP 4xx other than 401/403/429, e.g. an unknown trade)."""


class CloseUnconfirmed(ApiError):
    """Trades we asked to close (or orders to cancel) were still listed when the wait ran out."""


class Interrupted(MultirunError):
    """A stop was requested while the client waited to retry or to confirm: it stopped
    waiting. Not an order or close failure (nothing is known to have gone wrong)."""

    exit_code = EXIT_INTERRUPTED


# --- local state and processes ---------------------------------------------


class JournalError(MultirunError):
    """The per-account journal cannot be opened or written."""


class SupervisorError(MultirunError):
    """The supervisor cannot start, find, or stop its workers."""


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line (log lines and status fields are single lines)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def exit_code_for(error: BaseException) -> int:
    """The process exit code for ``error``: the single mapping the CLI uses."""
    if isinstance(error, MultirunError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE
