"""Secret masking: every rule that keeps API keys and session tokens out of sight.

One module owns them, so a leak path is closed once for every caller:

- :class:`Secret` holds a key; it never shows itself in ``str``, ``repr`` or a traceback.
- :class:`Redactor` masks known secret values and the value of any ``api_key``/``token``
  parameter or field (a URL, a query string, JSON, a dict's repr) in a line of text.
  Server text (which may echo a part of a key, in any case) also loses any run of
  :data:`FRAGMENT_LEN` or more characters of a known secret, compared case-insensitively.
- :class:`LineSplitter` cuts a child's output into lines without cutting a secret in
  two (two harmless-looking halves would pass any masking).
- :class:`RedactingFilter` applies the field rule to log records of libraries that log
  whole URLs (urllib3).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

MASK = "****"  # what a secret is replaced by, wherever it would be shown
MIN_SECRET_LEN = 4  # the schema's api_key minLength: shorter values are masked as whole words
# In server text, a run this long of a secret's characters is masked, whatever its case: a
# server echoing 7 characters of a key, or a lower-cased copy, would otherwise leak them.
FRAGMENT_LEN = 6
MAX_LINE = 64 * 1024  # a child's line longer than this is cut (after masking)

# The value of an ``api_key``/``token`` query parameter or keyword (``token=...``), or of
# such a key in JSON or a dict's repr (``"token": "..."``): a URL or a reply printed
# whole would carry it even where the value itself is not known here.
_SECRET_FIELD = re.compile(
    r"""((?<![A-Za-z0-9])(?:api_key|token)=["']?|["'](?:api_key|token)["']\s*:\s*["'])"""
    r"""[^&\s'"]+""",
    re.IGNORECASE,
)

# Loggers of libraries that log whole request URLs (with their query strings).
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")


class Secret:
    """A string that never shows itself in ``str``, ``repr``, logs or tracebacks.

    Call :meth:`reveal` at the single place the value must leave the process
    (the HTTP request).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str:
        """What is shown in the secret's place: nothing of it, not even a few characters."""
        return MASK

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask_fields(text: str) -> str:
    """``text`` with the values of ``api_key``/``token`` parameters and fields masked."""
    return _SECRET_FIELD.sub(rf"\g<1>{MASK}", text)


# From this many secrets on, a text is first checked for any secret's first characters
# (one pass building every window of the text) before each secret is searched for: with
# hundreds of secrets and short lines (the supervisor's) that pass is cheaper than the
# searches; with a few secrets, the searches (C substring search) are cheaper than
# building the windows, by far on long texts (the dashboard's documents: 4.4 -> 0.3 ms).
PREFILTER_FROM = 64


class Redactor:
    """Masks a fixed set of secret values, and every secret field, in text.

    A value of :data:`MIN_SECRET_LEN` characters or more is masked wherever it occurs;
    a shorter one only as a whole word (masked anywhere, it would eat ordinary words).
    Longer values are masked first, so a secret that contains another is masked whole.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s}
        self.secrets = sorted(unique, key=len, reverse=True)
        self._short = [
            re.compile(rf"(?<!\w){re.escape(s)}(?!\w)")
            for s in self.secrets
            if len(s) < MIN_SECRET_LEN
        ]
        # The first MIN_SECRET_LEN characters of each secret masked by plain search: a
        # line holding none of them holds none of those secrets, so the search (one scan
        # per secret: O(accounts) per line in the supervisor) is skipped.
        self._long = [s for s in self.secrets if len(s) >= MIN_SECRET_LEN]
        self._heads = frozenset(s[:MIN_SECRET_LEN] for s in self._long)
        self._grams = {gram for s in self.secrets for gram in _windows(_lower(s), FRAGMENT_LEN)}

    @property
    def reach(self) -> int:
        """How far past a cut a secret starting before it can extend (longest - 1)."""
        # secrets are sorted longest first: O(1), asked by every pipe's LineSplitter
        return len(self.secrets[0]) - 1 if self.secrets else 0

    def __call__(self, text: str) -> str:
        if self._long and (len(self._long) < PREFILTER_FROM or self._may_hold_one(text)):
            for secret in self._long:
                if secret in text:
                    text = text.replace(secret, MASK)
        for short in self._short:
            text = short.sub(MASK, text)
        return mask_fields(text)

    def _may_hold_one(self, text: str) -> bool:
        """Whether ``text`` holds the start of a secret (every window of its length)."""
        n = len(text) - MIN_SECRET_LEN + 1
        if n <= 0:
            return False
        windows = map(text.__getitem__, map(slice, range(n), range(MIN_SECRET_LEN, len(text) + 1)))
        return not self._heads.isdisjoint(windows)

    def server_text(self, text: str, limit: int = 160) -> str:
        """Text a server chose (an error message, a malformed field), fit to quote:
        one line, at most ``limit`` characters, every secret and every run of
        :data:`FRAGMENT_LEN` characters of one masked, in any case (a server may echo part
        of a key, or a lower-cased copy)."""
        text = " ".join(self._mask_fragments(self(text)).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def _mask_fragments(self, text: str) -> str:
        if not self._grams or len(text) < FRAGMENT_LEN:
            return text
        covered = [False] * len(text)
        for i, window in enumerate(_windows(_lower(text), FRAGMENT_LEN)):
            if window in self._grams:
                covered[i : i + FRAGMENT_LEN] = [True] * FRAGMENT_LEN
        out: list[str] = []
        for i, char in enumerate(text):
            if not covered[i]:
                out.append(char)
            elif i == 0 or not covered[i - 1]:
                out.append(MASK)
        return "".join(out)

    def mask_bytes(self, data: bytes) -> bytes:
        """``data`` with every known secret of :data:`MIN_SECRET_LEN` or more masked."""
        for secret in self.secrets:
            if len(secret) >= MIN_SECRET_LEN:
                data = data.replace(secret.encode(), MASK.encode())
        return data


class LineSplitter:
    """Bytes in, complete decoded lines out; overlong lines are cut at ``MAX_LINE``.

    Known secrets are masked before a cut: a secret cut in two would reach the
    :class:`Redactor` as two harmless-looking halves. So a cut waits until every secret
    that starts before it has arrived whole.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        max_line: int = MAX_LINE,
        *,
        redactor: Redactor | None = None,  # shared: building one costs O(secrets)
    ) -> None:
        self.buffer = b""
        self.redactor = redactor if redactor is not None else Redactor(secrets)
        self.max_line = max_line
        self.reach = self.redactor.reach

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        while len(self.buffer) > self.max_line + self.reach:
            self.buffer = self.redactor.mask_bytes(self.buffer)
            if len(self.buffer) <= self.max_line + self.reach:
                break  # shorter once masked: wait for more
            lines.append(self.buffer[: self.max_line])
            self.buffer = self.buffer[self.max_line :]
        return [_decode(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer, b""
        return [_decode(rest)] if rest else []


def _lower(text: str) -> str:
    """``text`` lower-cased character by character (its length kept: the few characters
    whose lower case is longer, such as U+0130, stay as they are)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _windows(text: str, size: int) -> list[str]:
    """Every run of ``size`` characters of ``text``, by where it starts."""
    return [text[i : i + size] for i in range(len(text) - size + 1)]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


class RedactingFilter(logging.Filter):
    """Masks secret fields in log records (urllib3 logs whole URLs with their queries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler
            return True
        clean = mask_fields(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(names: Iterable[str] = URL_LOGGERS) -> None:
    """Add a :class:`RedactingFilter` to each named logger, once."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def mask_url(url: str) -> str:
    """A URL fit to print: its scheme and host only (``https://hooks.slack.com/***``); a
    webhook's path, query and user info may each hold a token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{_port(parts)}" if _port(parts) else ""
    rest = "/" + MASK if (parts.path not in ("", "/") or parts.query or parts.username) else ""
    return f"{parts.scheme or '?'}://{host}{port}{rest}"


def url_secrets(url: str) -> list[str]:
    """What of a URL is masked in text: the whole of it, its path, query and user info."""
    parts = urlsplit(url)
    pieces = [url, parts.path.strip("/"), parts.query, parts.username or "", parts.password or ""]
    return [p for p in pieces if p]


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None
